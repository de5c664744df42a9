"""Training data: image/label pairs -> three-slice windows along the slice axis (k).

Everything a user can get wrong is checked when the data are loaded, before any training
starts, and reported as one line naming the file and the fix: unreadable files, image and
label on different grids, label maps with no labelled voxel, unknown structure names.

A *dense* (3D) label supervises all three slices of a window; a *sparse* (2D) label volume
is one whose labelled slices are single-slice annotations (each supervises only its own
slice, indicator one-hot on the centre).
"""
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..preprocess import SliceGeometry, detect_modality, normalise_volume, window_to_input
from ..structures import check_structure_names, resolve_structures
from .prompts import Prompt, simulate

MIN_AREA = 10  # a slice shows a structure when it has at least this many labelled pixels
GRID_TOLERANCE = 1e-3  # relative/absolute tolerance (mm) when comparing image and label grids


@dataclass
class LabelledVolume:
    name: str
    image: np.ndarray  # (z, y, x) raw intensities
    labels: np.ndarray  # (z, y, x) integer label map on the image grid
    spacing: Tuple[float, float, float] = (1.0, 1.0, 1.0)  # (x, y, z) mm
    names: Dict[int, str] = field(default_factory=dict)  # label value -> structure name (may be empty)
    sparse: bool = False  # True: labelled slices are independent 2D annotations
    modality: str = "auto"
    structures: List[int] = field(default_factory=list)  # label values trained on (set by select_structures)

    def structure_name(self, value: int) -> str:
        return self.names.get(value, f"label {value}")


def read_label_names(path) -> Dict[int, str]:
    """{value: name} from a JSON object {"1": "spleen", ...} (or {"spleen": 1, ...})."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"label-name map not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"label-name map {path} is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc}): give {{\"1\": \"liver\", ...}}") from None
    if not isinstance(raw, dict) or not raw:
        raise InputError(f"label-name map {path} must be a JSON object like {{\"1\": \"liver\"}}")
    out = {}
    for key, value in raw.items():
        if str(key).lstrip("-").isdigit():
            out[int(key)] = str(value)
        elif isinstance(value, int):
            out[int(value)] = str(key)
        else:
            raise InputError(f"label-name map {path}: entry {key!r}: {value!r} pairs no label number with a name: use {{\"1\": \"liver\"}}")
    return out


def same_grid(a, b) -> Optional[str]:
    """None when two SimpleITK images share size, spacing, origin and direction, else what differs."""
    if a.GetSize() != b.GetSize():
        return f"size {a.GetSize()} vs {b.GetSize()}"
    for what, x, y in (("spacing", a.GetSpacing(), b.GetSpacing()), ("origin", a.GetOrigin(), b.GetOrigin()), ("direction", a.GetDirection(), b.GetDirection())):
        if not np.allclose(x, y, rtol=GRID_TOLERANCE, atol=GRID_TOLERANCE):
            return f"{what} {tuple(round(v, 4) for v in x)} vs {tuple(round(v, 4) for v in y)}"
    return None


def load_pair(image_path, label_path, names_path=None, sparse: bool = False, modality: str = "auto") -> LabelledVolume:
    """Read and check one image/label pair (NIfTI, NRRD, DICOM folder: anything SlideSAMLib.read_image reads)."""
    from ..imageio import array_of, read_image

    image = read_image(image_path)
    labels = read_image(label_path)
    diff = same_grid(image, labels)
    if diff:
        raise InputError(
            f"label {label_path} is not on the grid of image {image_path} ({diff}): resample the label onto the image grid first"
        )
    lab = array_of(labels)
    if not np.issubdtype(lab.dtype, np.integer):
        if not np.allclose(lab, np.round(lab)):
            raise InputError(f"label {label_path} holds non-integer values: give a label map (integers, 0 = background)")
        lab = np.round(lab)
    lab = lab.astype(np.int32)
    if not np.any(lab > 0):
        raise InputError(f"label {label_path} has no labelled voxel (all 0): give a label map with at least one structure")
    names = read_label_names(names_path) if names_path else {}
    return LabelledVolume(
        name=Path(str(image_path)).name,
        image=array_of(image),
        labels=lab,
        spacing=tuple(image.GetSpacing()),
        names=names,
        sparse=sparse,
        modality=modality,
    )


def select_structures(volumes: Sequence[LabelledVolume], wanted: Optional[Sequence[str]] = None, min_area: int = MIN_AREA) -> None:
    """Set each volume's `structures`: all labels present (default) or the ones named / numbered in `wanted`."""
    if not volumes:
        raise InputError("no training data: give at least one --pair IMAGE LABEL")
    if wanted:
        check_structure_names(wanted, [v.names for v in volumes], map_hint="add NAMES.json to --pair")
    for v in volumes:
        chosen = resolve_structures(wanted, v.names, [int(x) for x in np.unique(v.labels) if x > 0])
        v.structures = [s for s in chosen if _slices_with(v.labels, s, min_area)]
    if not any(v.structures for v in volumes):
        what = ", ".join(wanted) if wanted else "any structure"
        raise InputError(f"none of the label maps shows {what} on a slice (at least {min_area} voxels): check the labels and --structures")


def _slices_with(labels: np.ndarray, value: int, min_area: int) -> List[int]:
    counts = (labels == value).reshape(labels.shape[0], -1).sum(axis=1)
    return [int(k) for k in np.nonzero(counts >= min_area)[0]]


@dataclass
class Example:
    """One window ready for the network: input, targets in the low-res frame, indicator, prompt."""

    image: torch.Tensor  # (3, img, img)
    target: torch.Tensor  # (3, 256, 256) float 0/1
    indicator: torch.Tensor  # (3,) float
    prompt: Prompt  # model-input coordinates
    source: str = ""


class WindowSampler:
    """Draws (volume, structure, centre slice) uniformly over structures, then over their slices."""

    def __init__(self, volumes: Sequence[LabelledVolume], spec, min_area: int = MIN_AREA):
        self.volumes = list(volumes)
        self.spec = spec
        self.items: List[Tuple[int, int, List[int]]] = []  # (volume index, label, centre slices)
        self.normalised = []
        for i, v in enumerate(self.volumes):
            modality = detect_modality(v.image) if v.modality == "auto" else v.modality
            self.normalised.append(normalise_volume(v.image, spec.preprocessing, modality))
            for s in v.structures:
                ks = _slices_with(v.labels, s, min_area)
                if ks:
                    self.items.append((i, s, ks))
        if not self.items:
            raise InputError("no training window: no structure covers a slice (call select_structures first)")

    def __len__(self) -> int:
        return sum(len(ks) for _, _, ks in self.items)

    def describe(self) -> List[dict]:
        return [
            {"volume": self.volumes[i].name, "structure": self.volumes[i].structure_name(s), "label": s, "slices": len(ks), "sparse": self.volumes[i].sparse}
            for i, s, ks in self.items
        ]

    def raw(self, rng: np.random.Generator):
        """(window (3, rows, cols) float32, target (3, rows, cols) bool, indicator (3,), name)."""
        i, s, ks = self.items[int(rng.integers(len(self.items)))]
        k = ks[int(rng.integers(len(ks)))]
        v = self.volumes[i]
        idx = np.clip([k - 1, k, k + 1], 0, v.labels.shape[0] - 1)
        window = self.normalised[i][idx]
        target = v.labels[idx] == s
        indicator = np.array([0.0, 1.0, 0.0] if v.sparse else [1.0, 1.0, 1.0], dtype=np.float32)
        return window, target, indicator, f"{v.name}:{v.structure_name(s)}:{k}"

    def example(self, rng: np.random.Generator, point_fraction: float = 0.5, augment: bool = True) -> Example:
        for _ in range(20):
            window, target, indicator, name = self.raw(rng)
            if augment:
                window, target = augment_window(window, target, rng, self.spec.preprocessing)
            ex = to_model_frame(window, target, indicator, self.spec, rng, point_fraction, name)
            if ex is not None:
                return ex
        raise InputError("could not draw a training window whose structure survives resizing: use larger structures (--min-area)")


def augment_window(window: np.ndarray, target: np.ndarray, rng: np.random.Generator, preprocessing: str):
    """Random zoom (a crop that keeps the centre-slice structure), horizontal flip and intensity jitter."""
    rows, cols = window.shape[1:]
    ys, xs = np.nonzero(target[1])
    if rng.random() < 0.6:
        f = rng.uniform(0.5, 1.0)
        h = int(min(rows, max(round(f * rows), ys.max() - ys.min() + 9)))
        w = int(min(cols, max(round(f * cols), xs.max() - xs.min() + 9)))
        y0 = int(rng.integers(max(0, ys.max() + 5 - h), max(0, min(ys.min() - 4, rows - h)) + 1))
        x0 = int(rng.integers(max(0, xs.max() + 5 - w), max(0, min(xs.min() - 4, cols - w)) + 1))
        y0, x0 = min(max(0, y0), rows - h), min(max(0, x0), cols - w)
        window, target = window[:, y0 : y0 + h, x0 : x0 + w], target[:, y0 : y0 + h, x0 : x0 + w]
    if rng.random() < 0.5:
        window, target = window[:, :, ::-1], target[:, :, ::-1]
    if preprocessing == "litemedsam":  # values in [0, 1]
        gamma = float(np.exp(rng.uniform(-0.2, 0.2)))
        window = np.clip(window * rng.uniform(0.9, 1.1) + rng.uniform(-0.05, 0.05), 0.0, 1.0) ** gamma
    return np.ascontiguousarray(window, dtype=np.float32), np.ascontiguousarray(target)


def to_model_frame(window, target, indicator, spec, rng, point_fraction, name="") -> Optional[Example]:
    """Resize like inference does (SlideSAMLib.preprocess) and simulate a prompt; None if the centre mask vanished."""
    rows, cols = window.shape[1:]
    geometry = SliceGeometry(rows, cols, spec.img_size, keep_aspect=spec.preprocessing == "litemedsam")
    image = window_to_input(window, geometry, spec.preprocessing)
    full, low = labels_to_model(target, geometry)
    centre = full[1].numpy() > 0.5
    if centre.sum() < 3:
        return None
    prompt = simulate(centre, rng, point_fraction)
    return Example(image=image, target=low, indicator=torch.from_numpy(np.asarray(indicator, dtype=np.float32)), prompt=prompt, source=name)


def labels_to_model(target: np.ndarray, geometry: SliceGeometry):
    """(3, rows, cols) bool label slices -> (model-input frame (3, S, S), low-res frame (3, 256, 256)) float 0/1,
    resized like the image (`window_to_input`) and padded like it."""
    rh, rw = geometry.resized
    t = F.interpolate(torch.from_numpy(target.astype(np.float32))[None], size=(rh, rw), mode="bilinear", align_corners=False)[0] > 0.5
    full = torch.zeros((3, geometry.img_size, geometry.img_size), dtype=torch.float32)
    full[:, :rh, :rw] = t.float()
    low = full if geometry.img_size == 256 else (F.interpolate(full[None], size=(256, 256), mode="area")[0] > 0.5).float()
    return full, low
