"""Under Slicer's GIL (emulated by gil_harness.py), the module's job path runs the model in another process.

The harness runs in a fresh interpreter (this pytest process has torch loaded by Testing/conftest.py): a main
thread that keeps the GIL in `usleep` between 100 ms ticks polling the module's BackgroundJob, the job sent
through a LocalEngine.  Asserted: none of torch / timm / segment_anything / onnxruntime was imported on the
Slicer side, the encoder ran in the engine's PID, and the mask is the one the engine's Session gives in this
process (same backend, same thread count).  The in-thread design fails the first assert by construction (it
loads the model into the Slicer-side process); the wall times of both designs are measured by the same
harness in benchmarks/RESULTS_engine_process.md, not asserted here.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gil_harness

HERE = Path(__file__).resolve().parent
WINDOW = (93, 97)  # the benchmark case, shortened: 5 slices upwards from the prompt


@pytest.fixture(scope="module")
def reference(slidesam_model):
    """The mask and encoder passes of the engine's own Session on the harness's case, here."""
    import SimpleITK as sitk

    from SlideSAMLib import Session

    image = sitk.ReadImage(str(gil_harness.CT))
    session = Session(slidesam_model, sitk.GetArrayFromImage(image), spacing=image.GetSpacing())
    result = session.segment(box=gil_harness.BOX_IJK, direction=gil_harness.DIRECTION, slice_range=WINDOW)
    return result


def run_harness(tmp_path, mode):
    import torch

    out = tmp_path / f"{mode}.json"
    command = [sys.executable, str(HERE / "gil_harness.py"), mode, str(out), "--threads", str(torch.get_num_threads()), "--range", *map(str, WINDOW)]
    env = dict(os.environ, PYTHONPATH=str(HERE.parents[1]))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def test_job_path_under_the_gil_runs_the_model_in_the_engine_process(tmp_path, reference):
    run = run_harness(tmp_path, "engine")
    print(f"GIL emulation, engine path: {run['wall_s']:.1f} s wall, {run['cpu_s']:.2f} s CPU on the Slicer side, {run['ticks']} ticks, engine {run['engine_seconds']:.1f} s")
    assert run["model_modules"] == []  # the Slicer-side process imported no model code
    assert run["engine_pid"] != run["pid"]  # the encoder passes below ran in the engine process
    assert run["encoder_passes"] == reference.encoder_passes > 0
    mask = reference.volume_mask()
    assert run["digest"] == gil_harness.digest(mask) and run["voxels"] == int(np.count_nonzero(mask)) > 0
    assert run["slices"] == reference.slices
