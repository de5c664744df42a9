"""Which segment a run writes into, with Slicer's segment selector as qMRMLSegmentSelectorWidget.cxx (v5.10.0) behaves:
it selects the first remaining segment when the current one is removed, and keeps the previous segmentation's segment
ID when the newly selected segmentation has no segments (its list is then empty and hidden). Neither may send a run
into a segment the annotator did not choose. Real widget code, logic and MRML; Qt widgets: Testing/slicer/standins."""
import numpy as np

from SlideSAMSlicer.writer import EditRules, read_segment
from test_slicer_widget import env, gui, new_segmentation, press_propagate_on_the_kidney  # noqa: F401  (fixtures)


def test_undoing_a_run_that_made_its_segment_selects_none_not_another_segment(gui):
    ui, ct, node = gui.ui, gui.ct, gui.widget.logic.getParameterNode()
    segmentation = new_segmentation(gui, "with a liver")
    liver = segmentation.GetSegmentation().AddEmptySegment("liver", "liver")
    gui.widget.logic.writer.apply(ct.node, segmentation, liver, 2, {ct.k: ct.reference[ct.k]}, [ct.k], EditRules())
    gui.widget.logic.writer.clear()  # the annotator's own segment, not a SlideSAM run
    before = read_segment(segmentation, liver, ct.node)
    assert ui.segmentSelector.currentSegmentID() == ""  # Segment: None -> a new segment
    press_propagate_on_the_kidney(gui)
    created = ui.segmentSelector.currentSegmentID()
    assert created and created != liver
    ui.undoButton.click()
    assert segmentation.GetSegmentation().GetSegment(created) is None  # the run's own segment went with its undo
    assert ui.segmentSelector.currentSegmentID() == "" and node.GetParameter("SegmentID") == ""  # as before the run
    assert not ui.restartButton.enabled and not ui.refineButton.enabled
    press_propagate_on_the_kidney(gui)
    np.testing.assert_array_equal(read_segment(segmentation, liver, ct.node), before)  # the liver was never written
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 2


def test_a_segmentation_without_segments_gets_a_new_segment_not_the_previous_ones_id(gui):
    ui, node = gui.ui, gui.widget.logic.getParameterNode()
    first = new_segmentation(gui, "first")
    kidney = first.GetSegmentation().AddEmptySegment("kidney_left", "kidney_left")
    ui.segmentSelector.setCurrentSegmentID(kidney)
    assert ui.segmentSelector.currentSegmentID() == kidney and node.GetParameter("SegmentID") == kidney
    second = new_segmentation(gui, "second, empty")
    assert ui.segmentSelector.currentSegmentID() == kidney  # what Slicer's selector keeps: the first node's ID
    assert node.GetParameter("SegmentID") == "" and not ui.restartButton.enabled and not ui.refineButton.enabled
    press_propagate_on_the_kidney(gui)
    segments = second.GetSegmentation()
    assert segments.GetNumberOfSegments() == 1 and segments.GetNthSegment(0).GetName() == "SlideSAM"  # the default new segment
    assert first.GetSegmentation().GetNumberOfSegments() == 1
