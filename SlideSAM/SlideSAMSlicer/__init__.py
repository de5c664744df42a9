"""Slicer-side helpers of the SlideSAM module (MRML geometry, segment writing, background work, dependencies).

Nothing here imports Qt; the module's widget (SlideSAM.py) is the only Qt user, so the
logic runs in Slicer's Python console, in a self-test and in CI through slicer-core.
"""
