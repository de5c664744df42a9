"""Driving the real `slidesam web` page with Playwright as a user does: mouse in the slice views, buttons.

The page publishes, in hidden <pre> elements, where each slice view shows what (its XY-to-RAS
matrix and the volume's IJK-to-RAS), the prompt's state and the last run's summary; the helpers
read them to turn voxel positions into page pixels and to wait for the server, never for a fixed time.
"""
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("SLIDESAM_DATA", ROOT.parent / "shared" / "data"))
CT = DATA / "ct_abdomen" / "example_ct.nii.gz"
CT_LABELS = DATA / "ct_abdomen" / "example_seg_fast_force_split.nii.gz"

KIDNEY_LEFT = 3  # TotalSegmentator label of the left kidney in example_seg_fast_force_split
SLICE = 93  # the prompt slice (k) and the kidney's voxel box on it: i 27..44, j 28..45
KIDNEY_BOX = ((27, 28, SLICE), (44, 45, SLICE))
TIMINGS = {}  # measured by the tests, written to timings.json in the page's temp folder
WAIT_MS = 600_000  # a propagation on a loaded 2-core CI machine: minutes; the wait ends as soon as the page says so


class WebPage:
    def __init__(self, page):
        self.page = page

    def json(self, element_id: str):
        return json.loads(self.page.text_content(f"#{element_id}") or "{}")

    def views(self):
        return self.json("slidesam-views")

    def text(self, element_id: str) -> str:
        return (self.page.text_content(f"#{element_id}") or "").strip()

    def wait_for(self, js_condition: str, timeout_ms: int = WAIT_MS):
        self.page.wait_for_function(f"() => {{ try {{ return {js_condition}; }} catch (e) {{ return false; }} }}", timeout=timeout_ms)

    def view_box(self, name: str = "Red", timeout_s: float = 300.0):
        """The page rectangle of a slice view's image (matched by its pixel size, which the server reports).

        Right after loading, the views are still being laid out and their first frames are on the way: wait for both."""
        deadline = time.time() + timeout_s
        while True:
            width, height = self.views().get(name, {}).get("dims", (0, 0))
            images = self.page.locator("img.image-display-area")
            boxes = [images.nth(i).bounding_box() for i in range(images.count())]
            found = [b for b in boxes if b and round(b["width"]) == width and round(b["height"]) == height]
            if found:
                return found[0]
            assert time.time() < deadline, f"no view image of {width}x{height} px among {boxes}"
            time.sleep(1)

    def page_xy(self, ijk, name: str = "Red"):
        """Page pixel of a voxel position (i, j, k) in a slice view (VTK's view y runs upwards)."""
        views = self.views()
        ras = np.array(views["ijk_to_ras"]).reshape(4, 4) @ np.array([*ijk, 1.0])
        xy = np.linalg.inv(np.array(views[name]["xy_to_ras"]).reshape(4, 4)) @ ras
        box = self.view_box(name)
        return box["x"] + xy[0], box["y"] + box["height"] - xy[1]

    def slice_index(self, name: str = "Red") -> int:
        """The slice a view shows once it has stopped moving (wheel events reach the server with a delay)."""
        last, since = self.views()[name]["index"], time.time()
        while time.time() - since < 1.5:
            time.sleep(0.25)
            now = self.views()[name]["index"]
            if now != last:
                last, since = now, time.time()
        return last

    def go_to_slice(self, target: int, name: str = "Red") -> None:
        """Scroll the mouse wheel over the view until it shows slice `target` (Slicer: one wheel step, one slice)."""
        box = self.view_box(name)
        self.page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.2)
        for _ in range(80):
            index = self.slice_index(name)
            if index == target:
                return
            for _ in range(min(abs(target - index), 6)):
                self.page.mouse.wheel(0, -120 if index < target else 120)
                time.sleep(0.1)
        raise AssertionError(f"the {name} view did not reach slice {target} (at {self.slice_index(name)})")

    def click_at(self, x: float, y: float) -> None:
        """Press and release without moving (Slicer places a markup point on the release)."""
        self.page.mouse.move(x, y)
        time.sleep(0.4)
        self.page.mouse.down()
        time.sleep(0.3)
        self.page.mouse.up()
        time.sleep(0.4)

    def place_box(self, corner0_ijk, corner1_ijk, name: str = "Red") -> None:
        """Box button, then click one corner, move, click the opposite corner (Slicer's ROI placement)."""
        self.page.click("#slidesam-box")
        self.wait_for("JSON.parse(document.querySelector('#slidesam-prompt-json').textContent).placing", 60_000)
        x0, y0 = self.page_xy(corner0_ijk, name)
        x1, y1 = self.page_xy(corner1_ijk, name)
        self.click_at(x0, y0)
        for t in np.linspace(0, 1, 8)[1:]:
            self.page.mouse.move(x0 + t * (x1 - x0), y0 + t * (y1 - y0))
            time.sleep(0.05)
        self.click_at(x1, y1)
        self.wait_for("(p => !p.placing && p.box_mm.filter(v => v > 0).length >= 2)(JSON.parse(document.querySelector('#slidesam-prompt-json').textContent))", 120_000)

    def place_points(self, button_id: str, points_ijk, name: str = "Red") -> None:
        """Include / Exclude button, then one click per point on the slice view."""
        kind = "include" if "include" in button_id else "exclude"
        count = self.json("slidesam-prompt-json")[kind]
        self.page.click(f"#{button_id}")
        self.wait_for("JSON.parse(document.querySelector('#slidesam-prompt-json').textContent).placing", 60_000)
        for n, ijk in enumerate(points_ijk, start=count + 1):
            self.click_at(*self.page_xy(ijk, name))
            self.wait_for(f"JSON.parse(document.querySelector('#slidesam-prompt-json').textContent).{kind} >= {n}", 60_000)

    def clear_prompts(self) -> None:
        self.page.click("#slidesam-clear")
        self.wait_for("(p => !p.box_mm[0] && !p.include && !p.exclude)(JSON.parse(document.querySelector('#slidesam-prompt-json').textContent))", 60_000)

    def add_segment(self) -> str:
        """The segment editor's + button: a new empty segment, the active one (the next run writes into it); its name."""
        before = self.text("slidesam-segment")
        self.page.locator("nav button:has(i.mdi-plus)").last.click()
        self.wait_for(f"document.querySelector('#slidesam-segment').textContent.trim() !== {json.dumps(before)}", 60_000)
        return self.text("slidesam-segment").removeprefix("into segment:").strip()

    def set_range(self, first=None, last=None, wait: bool = True) -> None:
        """Tick 'Only slices' and type the range with the keyboard; None: untick (the whole volume).  Returns once the
        server holds it (the page's echo, slidesam-range-seen), or at once with wait=False: the run buttons send the
        fields with their click (test_web_typed_range.py types and clicks so; before that fix a run pressed sooner
        could still see the old range: test_web_restart.py did, at load 9)."""
        box = self.page.locator("#slidesam-range-on")
        if box.is_checked() != (first is not None):
            box.click()
        seen = "JSON.parse(document.querySelector('#slidesam-range-seen').textContent)"
        if first is None:
            self.wait_for(f"{seen}[0] === false", 60_000)
            return
        for end, value in (("from", first), ("to", last)):
            self.page.click(f"#slidesam-range-{end}")
            self.page.keyboard.press("Control+A")
            self.page.keyboard.type(str(value))
        if not wait:
            return
        self.page.keyboard.press("Tab")
        self.wait_for(f"JSON.stringify({seen}) === {json.dumps(json.dumps([True, str(first), str(last)], separators=(',', ':')))}", 60_000)

    def progress(self) -> float:
        return float(self.page.get_attribute("#slidesam-progress", "aria-valuenow") or 0)

    def start(self, button_id: str) -> str:
        """Click Propagate / Restart; returns the run summary before it (for `finish`)."""
        before = self.page.text_content("#slidesam-last")
        self.page.click(f"#{button_id}")
        return before

    def finish(self, before: str) -> dict:
        """Wait until the page reports the run written (a new run summary) or an error; the summary."""
        self.wait_for(
            f"document.querySelector('#slidesam-error').textContent.trim() || "
            f"document.querySelector('#slidesam-last').textContent !== {json.dumps(before)}"
        )
        error = self.text("slidesam-error")
        assert not error, f"the page reported: {error}"
        return self.json("slidesam-last")

    def run(self, button_id: str) -> dict:
        """Click Propagate / Restart and wait until the page reports the run written (a new run summary) or an error."""
        return self.finish(self.start(button_id))

    def segments(self, folder) -> dict:
        """Every segment of the page's .seg.nrrd download, on example_ct's grid: {name: (k, j, i) uint8}."""
        return segments_on_ct_grid(self.download("slidesam-save-seg", folder))

    def undo(self, done, timeout_s: float = 120.0) -> dict:
        """Click Undo, then read the segments (download) until done(segments) holds or the time is up: the last read."""
        self.page.click("#slidesam-undo")
        deadline = time.time() + timeout_s
        segments = self.segments(self.folder)
        while not done(segments) and time.time() < deadline:
            time.sleep(2)
            segments = self.segments(self.folder)
        return segments

    def download(self, button_id: str, folder) -> str:
        with self.page.expect_download(timeout=120_000) as info:
            self.page.click(f"#{button_id}")
        path = folder / info.value.suggested_filename
        info.value.save_as(path)
        return path


def read_ct():
    import SimpleITK as sitk

    return sitk.ReadImage(str(CT))


def seg_nrrd_on_ct_grid(path: Path, segment_name: str) -> np.ndarray:
    """A segment of a .seg.nrrd (read by slicerio), resampled onto example_ct's grid: (k, j, i) uint8."""
    return segments_on_ct_grid(path)[segment_name]


def segments_on_ct_grid(path: Path) -> dict:
    """Every segment of a .seg.nrrd (read by slicerio), resampled onto example_ct's grid: {name: (k, j, i) uint8}."""
    import SimpleITK as sitk
    import slicerio

    segmentation = slicerio.read_segmentation(str(path))
    ijk_to_lps = np.array(segmentation["ijkToLPS"], dtype=float)
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    ct, out = read_ct(), {}
    for segment in segmentation["segments"]:
        mask = slicerio.segment_mask(segmentation, segment).astype(np.uint8)  # (i, j, k) in slicerio's order
        image = sitk.GetImageFromArray(np.ascontiguousarray(mask.transpose(2, 1, 0)))
        image.SetSpacing(spacing.tolist())
        image.SetOrigin(ijk_to_lps[:3, 3].tolist())
        image.SetDirection((ijk_to_lps[:3, :3] / spacing).ravel().tolist())
        out[segment["name"]] = sitk.GetArrayFromImage(sitk.Resample(image, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    return out
