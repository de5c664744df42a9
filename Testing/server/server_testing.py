"""Helpers for the server tests: a real `slidesam serve` process on loopback, the real data, prompts."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from SlideSAMLib.evaluation.metrics import dice  # noqa: F401  (the package's one Dice)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / ".." / "shared" / "data"
MR = DATA / "mr_abdomen" / "example_mr_sm.nii.gz"
MR_SEG = DATA / "mr_abdomen" / "example_seg_mr.nii.gz"
CT = DATA / "ct_abdomen" / "example_ct.nii.gz"
CT_SEG = DATA / "ct_abdomen" / "example_seg_fast_force_split.nii.gz"
API_KEY = "test-key-0123456789"
START_TIMEOUT_S = 300  # the server imports torch and builds the model before it listens


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m SlideSAMLib.cli serve` on a free loopback port; always stopped by its fixture."""

    def __init__(self, tmp_dir: Path, *options: str, api_key: str = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key
        self.log_path = tmp_dir / f"server-{self.port}.log"
        import torch

        # Same thread count as this process, so the server's arithmetic matches the local engine's bit for bit.
        threads = str(torch.get_num_threads())
        args = [sys.executable, "-m", "SlideSAMLib.cli", "serve", "--port", str(self.port), "--threads", threads, "--log-level", "warning", *options]
        if api_key:
            args += ["--api-key", api_key]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> "ServerProcess":
        from SlideSAMLib.client import ServerError, SlideSAMClient

        client = SlideSAMClient(self.url, api_key=self.api_key, timeout=5)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                client.version()
                return self
            except ServerError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the server did not answer within {START_TIMEOUT_S} s: {self.log_path.read_text()[-2000:]}")

    def client(self, **kwargs):
        from SlideSAMLib.client import SlideSAMClient

        kwargs.setdefault("api_key", self.api_key)
        return SlideSAMClient(self.url, **kwargs)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self._log.close()


def box_around(labels_2d: np.ndarray, k: int, margin: int = 1):
    """A box prompt (i, j, k corners) a margin around a label's extent on one slice, as an annotator would draw."""
    jj, ii = np.nonzero(labels_2d)
    return ((int(ii.min()) - margin, int(jj.min()) - margin, k), (int(ii.max()) + margin, int(jj.max()) + margin, k))
