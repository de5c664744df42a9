"""Model source "this computer": SlideSAMLogic through a real local engine process (SlideSAMLib.engine_process).

The engine (same thread count and encoder backend as this process) must give exactly the in-process result;
a killed engine mid-run gives one line and leaves the segment bit-identical, and the next run starts a new
engine; an engine that cannot start says why in one line.
"""
import os
import stat
import sys
import types

import numpy as np
import pytest
import slicer

import SlideSAM
from SlideSAMLib.engine_process import EngineError, LocalEngine, check_python
from SlideSAMSlicer.writer import read_segment
from slicer_data import lps_to_ras, refinement_clicks


@pytest.fixture(scope="module")
def engine_log():
    return []


@pytest.fixture(scope="module")
def engine(slidesam_model, engine_log):  # the model fixture first: it sets the thread count the engine copies
    import torch

    engine = LocalEngine(threads=torch.get_num_threads(), log=engine_log.append)
    try:
        yield engine
    finally:
        engine.stop()


def ras_of(ct, ijk):
    return lps_to_ras(ct.image.TransformContinuousIndexToPhysicalPoint([float(c) for c in ijk]))


def same_scores(got, expected):
    """Per-slice info equal; the decoder's predicted IoU differs between two processes in float32's last bits
    (measured: 3e-7 at most on this case, the masks bit-identical), so it is compared to 1e-5."""
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert {k: v for k, v in g.items() if k != "iou"} == {k: v for k, v in e.items() if k != "iou"}
        assert g["iou"] == pytest.approx(e["iou"], abs=1e-5)


def test_engine_result_equals_the_in_process_result(mrml, ct, window, engine, engine_log, slidesam_model):
    local, via = SlideSAM.SlideSAMLogic(model=slidesam_model), SlideSAM.SlideSAMLogic(engine=engine)
    seg_local = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "in process")
    seg_engine = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "engine process")
    expected = local.segment(ct.node, seg_local, "kidney_left", box=ct.box_ras, direction="up", sliceRange=window)
    got = via.segment(ct.node, seg_engine, "kidney_left", box=ct.box_ras, direction="up", sliceRange=window)
    assert engine.alive() and engine.pid != os.getpid()
    assert any("is ready at" in line for line in engine_log) and any("slidesam serve:" in line for line in engine_log)  # its output reached the log
    np.testing.assert_array_equal(read_segment(seg_engine, got.segmentId, ct.node), read_segment(seg_local, expected.segmentId, ct.node))
    assert (got.slices, got.stopped, got.prompt, got.encoderPasses) == (expected.slices, expected.stopped, expected.prompt, expected.encoderPasses)
    same_scores(got.info, expected.info)

    # a restart from a corrected slice: the same request through both, the engine reuses its embeddings
    corrected = ct.k + 1
    for logic, seg, report in ((local, seg_local, expected), (via, seg_engine, got)):
        edited = read_segment(seg, report.segmentId, ct.node)
        edited[corrected] = ct.reference[corrected]
        slicer.util.updateSegmentBinaryLabelmapFromArray(edited, seg, report.segmentId, ct.node)
    r_local = local.restart(ct.node, seg_local, expected.segmentId, corrected, axis=2, direction="up", sliceRange=window)
    r_engine = via.restart(ct.node, seg_engine, got.segmentId, corrected, axis=2, direction="up", sliceRange=window)
    np.testing.assert_array_equal(read_segment(seg_engine, got.segmentId, ct.node), read_segment(seg_local, expected.segmentId, ct.node))
    assert r_engine.encoderPasses == r_local.encoderPasses == 0
    same_scores(r_engine.info, r_local.info)

    # a refine by clicks on slice k (RefineRequest through the engine process): the same result as in this process
    (ex, ey), (ix, iy) = refinement_clicks(read_segment(seg_local, expected.segmentId, ct.node)[ct.k] > 0, ct.reference[ct.k] > 0)
    clicks = [(ras_of(ct, (ix, iy, ct.k)), True), (ras_of(ct, (ex, ey, ct.k)), False)]
    f_local = local.refine(ct.node, seg_local, expected.segmentId, points=clicks, sliceRange=window)
    f_engine = via.refine(ct.node, seg_engine, got.segmentId, points=clicks, sliceRange=window)
    refined = read_segment(seg_engine, got.segmentId, ct.node)
    np.testing.assert_array_equal(refined, read_segment(seg_local, expected.segmentId, ct.node))
    assert refined[ct.k, ey, ex] == 0 and refined[ct.k, iy, ix] == 1
    assert (f_engine.slices, f_engine.stopped, f_engine.prompt, f_engine.encoderPasses) == (f_local.slices, f_local.stopped, "refine", f_local.encoderPasses)
    same_scores(f_engine.info, f_local.info)


def test_engine_killed_mid_run_one_line_segment_unchanged_next_run_restarts(mrml, ct, window, engine):
    logic = SlideSAM.SlideSAMLogic(engine=engine)
    engine.client()  # running before the run to be cut
    seg = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "engine dies")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(ct.node)
    sid = seg.GetSegmentation().AddEmptySegment("kidney", "kidney")
    before = ct.reference.copy()
    slicer.util.updateSegmentBinaryLabelmapFromArray(before, seg, sid, ct.node)
    old_pid, starts = engine.pid, engine.starts

    def kill_on_first_slice(fraction, message):
        if fraction > 0 and engine.alive():
            engine.kill()

    with pytest.raises(EngineError) as error:
        logic.segment(ct.node, seg, sid, box=ct.box_ras, progress=kill_on_first_slice)  # the whole organ: long enough to be cut
    message = str(error.value)
    assert "\n" not in message and f"engine process {old_pid} stopped during the run" in message and "nothing was written" in message
    np.testing.assert_array_equal(read_segment(seg, sid, ct.node), before)
    assert not logic.canUndo(seg)

    report = logic.segment(ct.node, seg, sid, box=ct.box_ras, sliceRange=window)
    assert engine.alive() and engine.pid != old_pid and engine.starts == starts + 1
    after = read_segment(seg, sid, ct.node)
    assert report.slices and after[window[0] : window[1] + 1].any()
    np.testing.assert_array_equal(np.delete(after, range(window[0], window[1] + 1), axis=0), np.delete(before, range(window[0], window[1] + 1), axis=0))


def a_program(path, text="#!/bin/sh\n"):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _fake_python(tmp_path, version="3 9"):
    """A stand-in for an old interpreter (this machine has no Python 3.9): prints the version the probe asks for."""
    path = tmp_path / "python3.9"
    path.write_text(f"#!/bin/sh\necho {version}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_a_python_older_than_3_10_is_refused_in_one_line_offering_the_server(tmp_path):
    old = _fake_python(tmp_path)
    with pytest.raises(EngineError, match=r"needs Python >= 3\.10 .* is 3\.9 .*'SlideSAM server'.*Python >= 3\.10") as error:
        check_python(old)
    assert "\n" not in str(error.value)
    logic = SlideSAM.SlideSAMLogic(enginePython=old)
    with pytest.raises(EngineError, match="needs Python >= 3.10"):
        logic.ensureDependencies(confirm=lambda text: pytest.fail("offered to install into a Python that cannot run the engine"))
    with pytest.raises(EngineError, match="needs Python >= 3.10"):
        LocalEngine(python=old).client()


def test_an_engine_that_cannot_start_names_the_fix(tmp_path):
    with pytest.raises(EngineError, match="does not exist.*Engine Python"):
        LocalEngine(python=str(tmp_path / "no-such-python")).client()
    bare = tmp_path / "bare"  # a real Python >= 3.10 without SlideSAM's packages
    import venv

    venv.EnvBuilder(with_pip=False).create(bare)
    engine = LocalEngine(python=str(bare / "bin" / "python"), log=lambda line: None, startup_timeout_s=60)
    with pytest.raises(EngineError, match="exited with code 1 before it was ready .*No module named.*lacks SlideSAM's packages") as error:
        engine.client()
    assert "\n" not in str(error.value) and not engine.alive()


@pytest.fixture
def inside_slicers_launcher(tmp_path, monkeypatch):
    """This process's environment as Slicer's launcher leaves it (Slicer v5.10.0 SuperBuild/External_python.cmake:
    PYTHONHOME = Slicer's own Python, PYTHONNOUSERSITE=1, its stdlib on PYTHONPATH; here an empty folder stands for
    that Python) and `slicer.app.startupEnvironment()` giving the environment Slicer was started in."""
    import qt

    startup = qt.QProcessEnvironment(os.environ)
    slicer_python = tmp_path / "Slicer-5.8.1" / "lib" / "Python"
    (slicer_python / "lib" / "python3.9").mkdir(parents=True)
    monkeypatch.setenv("PYTHONHOME", str(slicer_python))
    monkeypatch.setenv("PYTHONNOUSERSITE", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(slicer_python / "lib" / "python3.9"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(startupEnvironment=lambda: startup, testingEnabled=lambda: False), raising=False)
    return slicer_python


def test_another_python_runs_outside_slicers_launcher_environment(inside_slicers_launcher):
    """'Another Python' (the way for Slicer 5.6 / 5.8, whose own Python is 3.9) is checked, probed for packages and
    started as the engine with the environment Slicer was started in: with the launcher's PYTHONHOME it cannot start."""
    import subprocess

    from SlideSAMSlicer import dependencies

    other = sys.executable  # not PythonSlicer: there is none on this PATH
    inherited = subprocess.run([other, "-c", "print(1)"], capture_output=True, text=True)
    assert inherited.returncode != 0  # what inheriting Slicer's environment does to another Python
    assert check_python(other) is None
    assert dependencies.missing_packages(other) == []
    engine = LocalEngine(python=other, log=lambda line: None, startup_timeout_s=120, threads=1)
    try:
        engine.client()
        assert engine.alive() and engine.info.get("version")
    finally:
        engine.stop()


def test_slicers_own_pythonslicer_keeps_the_launchers_environment(inside_slicers_launcher, tmp_path, monkeypatch):
    """PythonSlicer is itself a launcher and slicer.util._executePythonModule runs it in the current environment
    (useStartupEnvironment=False, util.py:3978); only another Python gets the startup environment."""
    import shutil

    from SlideSAMLib import engine_process

    pythonslicer = a_program(tmp_path / "PythonSlicer")
    real_which = shutil.which
    monkeypatch.setattr(engine_process.shutil, "which", lambda name, *a, **k: pythonslicer if name == "PythonSlicer" else real_which(name, *a, **k))
    assert engine_process.is_slicer_python(pythonslicer) and not engine_process.is_slicer_python(sys.executable)
    assert engine_process.python_environment(pythonslicer)["PYTHONHOME"] == str(inside_slicers_launcher)
    assert engine_process.python_environment(sys.executable).get("PYTHONHOME") != str(inside_slicers_launcher)


def test_on_windows_the_engine_probes_and_pip_open_no_console_window(monkeypatch):
    """What slicer.util.launchConsoleProcess passes on Windows (Slicer v5.10.0 util.py:3912-3915): STARTUPINFO with
    dwFlags 1 (STARTF_USESHOWWINDOW) and wShowWindow 0; Slicer runs without a console, so each process would open one."""
    import subprocess

    from SlideSAMLib import engine_process

    class StartupInfo:  # subprocess.STARTUPINFO exists on Windows only
        dwFlags, wShowWindow = 0, 1

    assert engine_process.hidden_window() == {}  # not Windows: nothing
    monkeypatch.setattr(engine_process.os, "name", "nt")
    monkeypatch.setattr(subprocess, "STARTUPINFO", StartupInfo, raising=False)
    monkeypatch.setattr(subprocess, "STARTF_USESHOWWINDOW", 1, raising=False)
    info = engine_process.hidden_window()["startupinfo"]
    assert (info.dwFlags, info.wShowWindow) == (1, 0)


def test_the_module_imports_no_model_code():
    """The Slicer-side modules import without torch & co. (checked in a fresh interpreter)."""
    import subprocess

    code = ("import sys; sys.path[:0] = ['SlideSAM']; import SlideSAMLib.engine_process, SlideSAMLib.client, SlideSAMLib.contract; "
            "import SlideSAMSlicer.jobs, SlideSAMSlicer.worker; "
            "print([m for m in ('torch', 'timm', 'segment_anything', 'onnxruntime') if m in sys.modules])")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=dict(os.environ, PYTHONPATH=root), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
