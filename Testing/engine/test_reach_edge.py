"""propagation.reach_edge: a neighbour mask that has lost the structure's edge is grown within the organ's intensity
band before the next box is taken from it; a mask that sits on its edge is left as it is (session 15)."""
import math

import numpy as np

from SlideSAMLib.propagation import reach_edge


def disc(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_a_blob_inside_the_band_grows_to_the_bands_edge_and_no_further():
    band = disc((100, 100), (50, 50), 30)  # the structure: everything in its band
    blob = disc((100, 100), (50, 50), 8)  # a mask that lost the edge: its ring lies in the band
    grown = reach_edge(blob, band, (2, 2), share=0.7, grow_px=40)
    assert (grown == band).all()  # reached the edge on every side, and stopped there
    limited = reach_edge(blob, band, (2, 2), share=0.7, grow_px=5)
    assert blob.sum() < limited.sum() < band.sum()  # grows by at most grow_px
    assert not (limited & ~disc((100, 100), (50, 50), 8 + 5 * math.sqrt(2) + 1)).any()


def test_a_mask_on_its_edge_is_left_alone():
    band = disc((100, 100), (50, 50), 30)
    on_edge = disc((100, 100), (50, 50), 30)
    assert reach_edge(on_edge, band, (2, 2), share=0.7, grow_px=40) is on_edge


def test_the_share_decides():
    band = np.zeros((100, 100), bool)
    band[:, :50] = True  # half the ring of a mask centred on the band's edge lies in the band
    mask = disc((100, 100), (50, 50), 10)
    assert reach_edge(mask, band, (2, 2), share=0.7, grow_px=40) is mask
    grown = reach_edge(mask, band, (2, 2), share=0.3, grow_px=40)
    assert grown[:, 50:].sum() == mask[:, 50:].sum()  # out of the band: never grown into
    assert grown[:, :50].sum() > mask[:, :50].sum()


def test_off_and_empty():
    band = np.ones((20, 20), bool)
    mask = disc((20, 20), (10, 10), 3)
    assert reach_edge(mask, band, (1, 1), share=math.inf, grow_px=5) is mask
    empty = np.zeros((20, 20), bool)
    assert reach_edge(empty, band, (1, 1), share=0.0, grow_px=5) is empty
