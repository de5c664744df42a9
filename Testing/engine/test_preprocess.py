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


def test_a_ct_cropped_without_air_is_still_ct(data_dir):
    """The spine CT's centre (no air around the body; minimum -356 HU) was called MR by "minimum below -500" and
    got MR normalisation silently. Fat in Hounsfield units gives it away; the reason says so."""
    from SlideSAMLib import array_of, read_image
    from SlideSAMLib.preprocess import guess_modality

    ct = array_of(read_image(data_dir / "ct_mr_spine" / "sub-ct_label-22_ct.nii.gz"))
    z, y, x = ct.shape
    crop = ct[z // 4 : 3 * z // 4, y // 3 : 2 * y // 3, x // 3 : 2 * x // 3]
    assert crop.min() > -500
    modality, reason = guess_modality(crop)
    assert modality == "ct" and "below -50" in reason and "%" in reason
    mr = array_of(read_image(data_dir / "mr_abdomen" / "example_mr_sm.nii.gz"))  # minimum -47
    assert guess_modality(mr)[0] == "mr" and guess_modality(ct)[0] == "ct"
    assert normalisation_for(crop, "litemedsam") == normalisation_for(ct, "litemedsam")  # both the CT window
