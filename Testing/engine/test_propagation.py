"""Propagation on real CT: Dice against the reference labels, where it stops, restart, cancel, reuse."""
import numpy as np
import pytest

from SlideSAMLib import InputError
from testdata import ORGANS, TARGETS, dice, tight_box  # TARGETS: the engine issue's Dice floors on example_ct


@pytest.fixture(scope="module")
def organ_results(ct_session, ct_labels):
    out = {}
    for organ in TARGETS:
        label = ct_labels == ORGANS[organ]
        out[organ] = ct_session.segment(box=tight_box(label))
    return out


@pytest.mark.parametrize("organ", sorted(TARGETS))
def test_one_box_dice_and_extent(organ_results, ct_labels, organ):
    label = ct_labels == ORGANS[organ]
    result = organ_results[organ]
    assert dice(result.volume_mask(), label) >= TARGETS[organ]
    true = np.nonzero(label.sum(axis=(1, 2)))[0]
    assert abs(result.slices[0] - true.min()) <= 2 and abs(result.slices[-1] - true.max()) <= 2
    assert result.axis == 2 and not result.cancelled


def test_encoder_passes_stay_near_the_organ(organ_results, ct_labels):
    result = organ_results["kidney_left"]
    extent = result.slices[-1] - result.slices[0] + 1
    # every window once, plus at most one batch of look-ahead per direction
    assert result.encoder_passes <= extent + 2 * 2 + 2


def test_second_prompt_reuses_embeddings(organ_results, ct_session, ct_labels):
    label = ct_labels == ORGANS["kidney_left"]
    again = ct_session.segment(box=tight_box(label))
    assert again.encoder_passes == 0
    np.testing.assert_array_equal(again.volume_mask(), organ_results["kidney_left"].volume_mask())


def test_restart_from_corrected_slice_replaces_one_side(organ_results, ct_session, ct_labels):
    label = ct_labels == ORGANS["kidney_right"]
    first = organ_results["kidney_right"]
    j = (first.slices[0] + first.slices[-1]) // 2
    corrected = label[j]  # the annotator's fix: the reference outline on slice j
    result = ct_session.restart(corrected, j, axis=2, direction="up")
    assert min(result.slices) == j and max(result.slices) > j
    np.testing.assert_array_equal(result.slice_masks[j], corrected)
    assert result.encoder_passes == 0  # all those windows were encoded by the first run
    upper = np.zeros_like(label)
    upper[j:] = label[j:]
    assert dice(result.volume_mask()[j:], upper[j:]) >= 0.8


def test_cancel_leaves_consistent_partial_result(ct_session, ct_labels):
    label = ct_labels == ORGANS["spleen"]
    calls = []

    def progress(fraction, message):
        calls.append(fraction)

    result = ct_session.segment(box=tight_box(label), progress=progress, cancel=lambda: len(calls) >= 4)
    assert result.cancelled
    assert set(result.slices) == set(range(result.slices[0], result.slices[-1] + 1))  # contiguous
    assert 1 < len(result.slices) <= 6
    assert "cancelled" in result.stopped.values()


def test_direction_and_range(ct_session, ct_labels):
    label = ct_labels == ORGANS["kidney_left"]
    box = tight_box(label)
    k = box[0][2]
    up = ct_session.segment(box=box, direction="up")
    assert min(up.slices) == k and "down" not in up.stopped
    ranged = ct_session.segment(box=box, slice_range=(k - 2, k + 3))
    assert ranged.slices == list(range(k - 2, k + 4))
    assert set(ranged.stopped.values()) == {"range-end"}


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, "empty prompt"),
        ({"box": ((10, 10, 50), (10, 40, 50))}, "zero size"),
        ({"box": ((10, 10, 50), (500, 40, 50))}, "outside the volume"),
        ({"box": ((10, 10, 500), (50, 40, 500))}, "outside the volume"),
        ({"box": ((10, 10, 40), (50, 40, 50))}, "one slice"),
        ({"points": [((60, 50, 80), False)]}, "only exclude clicks"),
        ({"box": ((10, 10, 50), (50, 40, 50)), "direction": "sideways"}, "direction"),
        ({"box": ((10, 10, 50), (50, 40, 50)), "slice_range": (60, 70)}, "outside the slice range"),
    ],
)
def test_bad_prompts_are_refused_before_any_work(ct_session, kwargs, expected):
    before = ct_session.encoder_passes
    with pytest.raises(InputError, match=expected) as err:
        ct_session.segment(**kwargs)
    assert "\n" not in str(err.value)
    assert ct_session.encoder_passes == before


def test_sagittal_prompt_propagates_along_i(ct_session, ct_labels):
    label = ct_labels == ORGANS["kidney_left"]
    i = int(label.sum(axis=(0, 1)).argmax())
    ks, js = np.nonzero(label[:, :, i])
    box = ((i, js.min(), ks.min()), (i, js.max(), ks.max()))
    result = ct_session.segment(box=box, slice_range=(i - 3, i + 3))
    assert result.axis == 0
    mask = result.volume_mask().astype(bool)
    assert dice(mask[:, :, i - 3 : i + 4], label[:, :, i - 3 : i + 4]) >= 0.7


def test_thin_slices_stop_near_the_organ_end(model, ct_image):
    """A thin-slice CT (example_ct resampled to 512x512x300 over the same extent, as benchmarks/bench_propagation.py
    does): without the tail rule the liver's downward chain followed a small neighbour for 52 slices (58 mm) past
    the liver. Prompted on the largest slice as an annotator would (the rule is relative to the largest mask seen),
    downwards only, within 60 slices below the liver, to keep the run to ~115 windows."""
    import sys
    from pathlib import Path

    import SimpleITK as sitk

    from SlideSAMLib import Session, array_of, read_image
    from testdata import CT_LABELS

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from _common import LARGE_SIZE_XYZ, resample_to_size

    image = resample_to_size(ct_image, LARGE_SIZE_XYZ, sitk.sitkLinear, sitk.sitkInt16)
    liver = array_of(resample_to_size(read_image(CT_LABELS), LARGE_SIZE_XYZ, sitk.sitkNearestNeighbor)) == ORGANS["liver"]
    end = int(np.nonzero(liver.any(axis=(1, 2)))[0].min())
    k = int(liver.sum(axis=(1, 2)).argmax())
    session = Session(model, array_of(image), spacing=image.GetSpacing())
    result = session.segment(box=tight_box(liver, k), direction="down", slice_range=(end - 60, k))
    overrun_mm = (end - result.slices[0]) * image.GetSpacing()[2]
    assert result.stopped["down"] == "tail" and overrun_mm <= 25.0, (result.stopped, overrun_mm)
    assert dice(result.volume_mask()[end : k + 1], liver[end : k + 1]) >= 0.85
    # The correction loop near the end: the reference outline 25 slices above the end, downwards again. Told the
    # organ's largest slice, the restart stops as the first run did (from the corrected slice alone, it ran 52 on).
    largest = int(result.volume_mask().sum(axis=(1, 2)).max())
    again = session.restart(liver[end + 25], end + 25, direction="down", slice_range=(end - 60, k), largest_area=largest)
    assert again.stopped["down"] == "tail" and (end - again.slices[0]) * image.GetSpacing()[2] <= 25.0, again.stopped


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.0, 0.0, 3.0), (1.0, float("nan"), 3.0), (-1.0, 1.0, 3.0)])
def test_bad_spacing_is_refused_in_one_line(model, ct_labels, spacing):
    from SlideSAMLib import Session

    with pytest.raises(InputError, match="voxel spacing") as err:
        Session(model, ct_labels, spacing=spacing)
    assert "\n" not in str(err.value)


def test_missing_spacing_is_refused_in_one_line(model, ct_labels):
    """Lengths are in mm (margin, step, tail): a session without the voxel size is refused, as the server's upload is."""
    from SlideSAMLib import Session

    with pytest.raises(InputError, match="no voxel spacing") as err:
        Session(model, ct_labels)
    assert "\n" not in str(err.value) and "GetSpacing" in str(err.value)
    with pytest.raises(InputError, match="not three positive sizes"):
        Session(model, ct_labels, spacing="3 mm")
    assert Session(model, ct_labels, spacing=(3.0, 3.0, 3.0)).spacing == (3.0, 3.0, 3.0)


def test_bad_largest_area_is_refused_before_any_work(ct_session, ct_labels):
    label = ct_labels == ORGANS["kidney_right"]
    k = int(label.sum(axis=(1, 2)).argmax())
    before = ct_session.encoder_passes
    with pytest.raises(InputError, match="largest_area") as err:
        ct_session.restart(label[k], k, direction="up", largest_area=-5)
    assert "\n" not in str(err.value) and ct_session.encoder_passes == before


def test_each_propagator_gets_its_own_default_rule(ct_session):
    from SlideSAMLib.propagation import Propagator

    p = ct_session.predictor(2)
    Propagator(p, ct_session.stack_spacing(2)).rule.max_growth = 99.0  # one caller's tweak ...
    assert Propagator(p, ct_session.stack_spacing(2)).rule.max_growth == 1.6  # ... is not the next one's default


def test_stack_spacing_and_the_model_pixel_margin(ct_session):
    """(slice, row, col) spacing of each stack; the margin and step are model-input pixels on any voxel size."""
    from SlideSAMLib import Session
    from SlideSAMLib.propagation import BOX_MARGIN_MODEL_PX, STEP_MODEL_PX, Propagator, slice_pixels

    fine = Session(ct_session.model, ct_session.volume, spacing=(2.0, 0.5, 3.0))
    assert fine.stack_spacing(2) == (3.0, 0.5, 2.0) and fine.stack_spacing(0) == (2.0, 3.0, 0.5)
    prop = Propagator(fine.predictor(2), fine.stack_spacing(2))
    assert prop.slice_mm == 3.0 and prop.margin == slice_pixels(prop.p.geometry, BOX_MARGIN_MODEL_PX)
    sx, sy = slice_pixels(prop.p.geometry, STEP_MODEL_PX)
    assert prop.step == (max(1, round(sy)), max(1, round(sx)))


def test_outside_the_volume_says_plain_numbers_and_the_size(ct_session):
    """numpy coordinates once printed as np.float64(500.0), and the volume's dimensions as a "voxel size"."""
    with pytest.raises(InputError) as err:
        ct_session.segment(box=((np.float64(10.0), np.int64(10), 50), (np.float64(500.0), 40.0, 50)))
    message = str(err.value)
    assert "np." not in message and "box corner (500, 40, 50)" in message and "size 122 x 101 x 112 voxels" in message
