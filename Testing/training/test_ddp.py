"""Multi-process training through torchrun (DDP on CPU with gloo): ranks stay identical, rank 0 writes the adapter."""
import json
import os
import subprocess
import sys

from testdata import MR, MR_LABELS, ROOT


def test_torchrun_two_processes_train_and_write_one_adapter(tmp_path):
    out = tmp_path / "adapter"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "SlideSAMLib.cli", "train", "--pair", str(MR), str(MR_LABELS), "--structures", "1,3",
           "--steps", "2", "--batch-size", "1", "--device", "cpu", "--quiet", "-o", str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "slidesam_adapter.json").read_text())
    assert manifest["training"]["processes"] == 2 and manifest["training"]["steps"] == 2
    assert manifest["training"]["batch_size"] == 2  # one window per process and step
    rows = (out / "loss.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2  # header + one row per step, written by rank 0 only
