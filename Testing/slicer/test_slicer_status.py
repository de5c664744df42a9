"""The module's status line says why a run stopped in words (SlideSAMLib.stop_reasons), not as raw codes."""
from SlideSAMSlicer.jobs import RunReport

from SlideSAMLib.stop_reasons import STOP_REASONS


def _report(stopped, cancelled=False):
    return RunReport(segmentId="s", axis=2, slices=[4, 5, 6], changedSlices=[4, 5, 6], info=[], stopped=stopped,
                     cancelled=cancelled, seconds=1.25, encoderPasses=3)


def test_every_stop_reason_reaches_the_status_line_in_words():
    for code, words in STOP_REASONS.items():
        line = _report({"up": code, "down": "volume-end"}).summary()
        assert f"stopped up (higher slice indices): {words} ({code}); down (lower slice indices): reached the edge of the volume (volume-end)" in line, line
        assert f"up: {code}" not in line


def test_status_line_without_a_propagated_side_and_with_an_unknown_code():
    assert "nothing was propagated" in _report({}).summary()
    assert "up (higher slice indices): wobbled (a reason this version does not describe)" in _report({"up": "wobbled"}).summary()
    line = _report({"up": "cancelled"}, cancelled=True).summary()
    assert line.startswith("cancelled, partial result kept; 3 slices (K 4..6); stopped up (higher slice indices): cancelled (cancelled)")
