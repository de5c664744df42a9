"""Normalisation on the fly (no float copy of the volume) equals normalising the whole volume first."""
import numpy as np
import pytest

from SlideSAMLib.preprocess import NormalisedStack, normalisation_for, normalise_volume


@pytest.mark.parametrize("preprocessing", ["litemedsam", "slidesam"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_stack_slices_equal_the_normalised_volume(ct_image, preprocessing, axis):
    from SlideSAMLib import array_of

    volume = array_of(ct_image)
    whole = np.moveaxis(normalise_volume(volume, preprocessing), 2 - axis, 0)
    stack = NormalisedStack(volume, axis, normalisation_for(volume, preprocessing))
    assert stack.shape == whole.shape and stack[0].dtype == np.float32
    for k in (0, whole.shape[0] // 2, whole.shape[0] - 1):
        np.testing.assert_array_equal(stack[k], whole[k])
    idx = np.array([4, 5, 6])
    np.testing.assert_array_equal(stack[idx], whole[idx])
    if preprocessing == "litemedsam":
        assert 0.0 <= float(whole.min()) and float(whole.max()) <= 1.0


def test_mr_window_comes_from_the_volume_percentiles(data_dir):
    from SlideSAMLib import array_of, read_image

    volume = array_of(read_image(data_dir / "mr_abdomen" / "example_mr_sm.nii.gz"))
    norm = normalisation_for(volume, "litemedsam")
    assert norm.scale and norm.lo < norm.hi
    inside = volume[volume > volume.min()]
    assert norm.lo == pytest.approx(np.percentile(inside, 0.5)) and norm.hi == pytest.approx(np.percentile(inside, 99.5))
