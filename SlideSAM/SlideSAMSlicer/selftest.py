"""SlideSAMTest: the module's self-test, what Slicer runs with --testing and *Reload and Test* (ScriptedLoadableModule.runTest
finds `<ModuleName>Test` as an attribute of the module, Base/Python/slicer/ScriptedLoadableModule.py:72-85: SlideSAM.py
imports it); also run against slicer-core in Testing/slicer/test_slicer_selftest.py."""
import numpy as np
import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from SlideSAMSlicer import geometry
from SlideSAMSlicer.logic import SlideSAMLogic
from SlideSAMSlicer.writer import read_segment


class SlideSAMTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (and, against slicer-core, in Testing/slicer/test_slicer_selftest.py).

    Needs no download (under --testing Slicer must fetch nothing): the volume is made here, a bright ellipsoid in
    soft tissue, so the reference mask is known exactly.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_propagate_restart_undo()

    @staticmethod
    def makeVolume():
        """(volume node, reference mask (k, j, i)): 96 x 96 x 40 voxels of 1.5 mm; air, a 40 HU body, a 150 HU ellipsoid."""
        k, j, i = np.mgrid[0:40, 0:96, 0:96].astype(np.float32)
        body = ((i - 48) / 44) ** 2 + ((j - 48) / 40) ** 2 <= 1
        truth = ((i - 48) / 18) ** 2 + ((j - 44) / 13) ** 2 + ((k - 20) / 11) ** 2 <= 1
        noise = np.random.default_rng(0).normal(0, 12, truth.shape)
        voxels = (np.where(truth, 150, np.where(body, 40, -1000)) + noise).astype(np.int16)
        volumeNode = slicer.util.addVolumeFromArray(voxels, name="SlideSAM self-test")
        volumeNode.SetSpacing(1.5, 1.5, 1.5)
        return volumeNode, truth

    def test_propagate_restart_undo(self):
        volumeNode, truth = self.makeVolume()
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        logic = SlideSAMLogic()
        try:
            k = 20  # the ellipsoid's largest slice; its tight box there, in voxels (i, j), turned into RAS
            corners = geometry.ijk_to_ras(volumeNode, [(30, 31, k), (66, 57, k)])
            self.delayDisplay("Propagating from a box on slice 20")
            report = logic.segment(volumeNode, segmentationNode, "ellipsoid", box=(corners[0], corners[1]))
            before = read_segment(segmentationNode, report.segmentId, volumeNode).astype(bool)
            dice = 2.0 * np.count_nonzero(before & truth) / (np.count_nonzero(before) + np.count_nonzero(truth))
            self.assertGreater(dice, 0.8, f"Dice {dice:.3f} against the ellipsoid")
            restart = logic.restart(volumeNode, segmentationNode, report.segmentId, k, direction="up")
            after = read_segment(segmentationNode, report.segmentId, volumeNode)
            np.testing.assert_array_equal(after[: k + 1], before[: k + 1])  # the other side is untouched
            self.assertTrue(logic.undo(segmentationNode))
            np.testing.assert_array_equal(read_segment(segmentationNode, report.segmentId, volumeNode).astype(bool), before)
            r = k + 3  # refine slice 23 with clicks: include at the centre, exclude inside the mask to its right (i 60)
            self.assertTrue(before[r, 44, 48] and before[r, 44, 60])
            include, exclude = geometry.ijk_to_ras(volumeNode, [(48, 44, r), (60, 44, r)])
            refine = logic.refine(volumeNode, segmentationNode, report.segmentId, points=[(include, True), (exclude, False)])
            refined = read_segment(segmentationNode, report.segmentId, volumeNode)
            self.assertTrue(refined[r, 44, 48] and not refined[r, 44, 60])
            self.assertTrue(logic.undo(segmentationNode))
            np.testing.assert_array_equal(read_segment(segmentationNode, report.segmentId, volumeNode).astype(bool), before)
            self.delayDisplay(f"Test passed: Dice {dice:.3f}; {report.summary()} / restart: {restart.summary()} / refine: {refine.summary()}")
            return dice
        finally:
            logic.stopEngine()
