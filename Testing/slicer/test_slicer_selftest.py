"""The module's own self-test (SlideSAMTest, what Slicer runs with --testing), on slicer-core MRML.

It makes its volume itself (nothing is downloaded) and runs the default model source, "this computer": a real
local engine process. Fails if the self-test needs a download, if the engine path fails, or if the ellipsoid is missed.
"""
import sys

import SlideSAM


def test_the_self_test_passes_through_the_engine_process(mrml, slidesam_model):
    assert "SampleData" not in sys.modules
    test = SlideSAM.SlideSAMTest()
    test.setUp()
    dice = test.test_propagate_restart_undo()
    assert dice > 0.8
    assert "SampleData" not in sys.modules  # nothing was downloaded
