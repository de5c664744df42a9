"""Load figure for `slidesam serve`: requests/s and latency under N concurrent annotator sessions.

Each simulated annotator uploads a real MR crop (../shared/data/mr_abdomen), sends one prompt
on fresh embeddings ("cold": the encoder runs), then `--warm` more prompts on the same session
("warm": cached embeddings, decoder only — what a corrected box or a restart costs).  All
annotators of a round start together; rounds run for each N in --sessions.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_server.py --sessions 1 2 4 --warm 3
    PYTHONPATH=. .venv/bin/python benchmarks/bench_server.py --url http://gpu-box:8765 --api-key-file key.txt

Without --url it starts its own server on a free loopback port (same machine as the clients).
"""
import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from SlideSAMLib.client import ServerError, SlideSAMClient  # noqa: E402  (after the path insert)
from SlideSAMLib.imageio import array_of, read_image  # noqa: E402

DATA = ROOT / ".." / "shared" / "data" / "mr_abdomen"
KIDNEY_RIGHT = 2


def start_server(extra) -> tuple:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "SlideSAMLib.cli", "serve", "--port", str(port), "--log-level", "warning", *extra],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    client = SlideSAMClient(url, timeout=5)
    for _ in range(600):  # up to ~5 minutes for torch + model
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: see {log.name}")
        try:
            client.version()
            return proc, url
        except ServerError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the server did not start: see {log.name}")


def annotator(url, key, crop, box, warm, barrier, out):
    client = SlideSAMClient(url, api_key=key, timeout=600)
    session = client.upload(crop, (3.0, 3.0, 3.0), modality="mr")
    barrier.wait()
    t0 = time.perf_counter()
    client.segment(session, box=box)
    out.append(("cold", time.perf_counter() - t0, time.perf_counter()))
    for _ in range(warm):
        t0 = time.perf_counter()
        client.segment(session, box=box)
        out.append(("warm", time.perf_counter() - t0, time.perf_counter()))
    client.close(session)


def percentile(values, q):
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4], help="concurrent annotators per round")
    ap.add_argument("--warm", type=int, default=3, help="prompts per annotator after the first (cached embeddings)")
    ap.add_argument("--slices", type=int, default=3, help="slices in the MR crop each annotator uploads")
    ap.add_argument("--url", help="benchmark a running server instead of starting one")
    ap.add_argument("--api-key-file")
    ap.add_argument("--server-args", default="", help="extra options for the server this script starts, e.g. '--device cuda'")
    args = ap.parse_args()

    image = read_image(DATA / "example_mr_sm.nii.gz")
    volume, labels = array_of(image), array_of(read_image(DATA / "example_seg_mr.nii.gz"))
    k0 = 3
    crop = volume[k0 : k0 + args.slices]
    mid = args.slices // 2
    jj, ii = np.nonzero(labels[k0 + mid] == KIDNEY_RIGHT)
    box = ((int(ii.min()) - 1, int(jj.min()) - 1, mid), (int(ii.max()) + 1, int(jj.max()) + 1, mid))
    key = Path(args.api_key_file).read_text().splitlines()[0].strip() if args.api_key_file else None

    proc = None
    url = args.url
    if url is None:
        proc, url = start_server(args.server_args.split())
    try:
        info = SlideSAMClient(url, api_key=key).version()
        print(f"server {info['version']} at {url}: {info['model']} on {info['device']}; crop {crop.shape} (k, j, i); "
              f"{os.cpu_count()} CPUs here", flush=True)
        rows = []
        for n in args.sessions:
            samples, barrier = [], threading.Barrier(n)
            threads = [threading.Thread(target=annotator, args=(url, key, crop, box, args.warm, barrier, samples)) for _ in range(n)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            for phase in ("cold", "warm", "all"):
                lat = [s[1] for s in samples if phase in ("all", s[0])]
                if not lat:
                    continue
                ends = [s[2] for s in samples if phase in ("all", s[0])]
                starts = [s[2] - s[1] for s in samples if phase in ("all", s[0])]
                span = max(ends) - min(starts)
                rows.append((n, phase, len(lat), span, len(lat) / span, statistics.median(lat), percentile(lat, 95), max(lat)))
            print(f"  {n} session(s) done in {wall:.1f} s", flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)

    print()
    print("| sessions | requests | n | span s | req/s | p50 s | p95 s | max s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for n, phase, count, span, rps, p50, p95, worst in rows:
        print(f"| {n} | {phase} | {count} | {span:.1f} | {rps:.2f} | {p50:.2f} | {p95:.2f} | {worst:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
