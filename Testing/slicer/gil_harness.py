"""Slicer's GIL, emulated: the main thread waits in a C call that keeps the GIL between short Python ticks.

In Slicer the main thread holds the GIL while Qt waits for events (CTK's ctkAbstractPythonManager never
releases it), so a Python thread in Slicer's process runs only during the main thread's Python ticks.
Here the main thread sleeps in `usleep(TICK_US)` through `ctypes.PyDLL` (a PyDLL call keeps the GIL),
then polls the job for one tick, as the widget's QTimer does.

    python gil_harness.py MODE OUT.json [--encoder auto|torch|onnx] [--threads N] [--range A B] [--large] [--gil-free]
MODE  session   the engine's Session.segment on the main thread, no emulation (what `slidesam segment` runs)
      engine    the module's job path (prepareSegment, BackgroundJob, applyJob) with the model in a LocalEngine process
      inthread  the same job path with the model in this process (the design before issue 11)
The case: example_ct, the left kidney from the box (27, 28)-(44, 45) on slice k=93, upwards.  --large: example_ct
resampled (linear) to 512 x 512 x 300 over the same extent, the same box in its voxels (what a full-size CT moves
through the socket: 157 MB of int16).  --gil-free: the main thread sleeps in time.sleep, which releases the GIL
(what an event loop that released it would give): the difference to the default is what Slicer's GIL costs.
OUT.json: wall seconds of the propagation, this process's CPU seconds meanwhile, the engine's PID, which of
torch / timm / segment_anything / onnxruntime this process imported, and the mask (slices and a digest).
"""
import argparse
import ctypes
import hashlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CT = ROOT / ".." / "shared" / "data" / "ct_abdomen" / "example_ct.nii.gz"
BOX_IJK = ((27.0, 28.0, 93.0), (44.0, 45.0, 93.0))
DIRECTION = "up"
TICK_US = 100_000  # the widget's poll timer: 100 ms
MODEL_MODULES = ("torch", "timm", "segment_anything", "onnxruntime")


LARGE = (512, 512, 300)  # i, j, k


def case(args):
    """(image file, box in its voxels): example_ct, or its 512 x 512 x 300 resample written once to a temp file."""
    if not args.large:
        return CT, BOX_IJK
    import tempfile

    import SimpleITK as sitk

    path = Path(tempfile.gettempdir()) / "slidesam_gil_harness_512x512x300_int16.nrrd"
    image = sitk.ReadImage(str(CT))
    size = image.GetSize()
    scale = [s / n for s, n in zip(size, LARGE)]  # old voxels per new voxel, per axis
    if not path.exists():
        spacing = [sp * f for sp, f in zip(image.GetSpacing(), scale)]
        origin = image.TransformContinuousIndexToPhysicalPoint([(f - 1) / 2 for f in scale])
        large = sitk.Resample(image, list(LARGE), sitk.Transform(), sitk.sitkLinear, origin, spacing, image.GetDirection(), -1024.0,
                              sitk.sitkInt16)  # a CT's usual voxel type (example_ct itself is int32)
        sitk.WriteImage(large, str(path), True)
    box = tuple(tuple((c + 0.5) / f - 0.5 for c, f in zip(corner, scale)) for corner in BOX_IJK)
    box = tuple((x, y, float(round(z))) for x, y, z in box)
    return path, box


def slicer_side(path):
    """slicer-core's MRML as Testing/slicer/conftest.py sets it up (the conftest file, imported by path)."""
    spec = importlib.util.spec_from_file_location("slicer_conftest", HERE / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    scene, logics = conftest.make_mrml()
    node = logics["Volumes"].AddArchetypeVolume(str(path), "harness volume", 0)
    return scene, node


def ras_of(node, ijk):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return tuple(matrix.MultiplyPoint((*ijk, 1.0))[:3])


def digest(mask) -> str:
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(mask, dtype=np.uint8).tobytes()).hexdigest()[:16]


def run_session(args) -> dict:
    import numpy as np
    import SimpleITK as sitk
    import torch

    from SlideSAMLib import Session, load_model

    torch.set_num_threads(args.threads)
    model = load_model(device="cpu", encoder=args.encoder)
    path, box = case(args)
    image = sitk.ReadImage(str(path))
    session = Session(model, sitk.GetArrayFromImage(image), spacing=image.GetSpacing())
    start, cpu = time.perf_counter(), time.process_time()
    result = session.segment(box=box, direction=DIRECTION, slice_range=args.range)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    mask = result.volume_mask()
    return {"wall_s": wall, "cpu_s": cpu, "engine_pid": os.getpid(), "slices": result.slices, "digest": digest(mask), "voxels": int(np.count_nonzero(mask)),
            "encoder_passes": result.encoder_passes}


def run_job(args, in_process: bool) -> dict:
    import numpy as np

    path, box = case(args)
    scene, node = slicer_side(path)
    sys.path.insert(0, str(ROOT / "SlideSAM"))
    from SlideSAMSlicer.logic import SlideSAMLogic
    from SlideSAMSlicer.worker import BackgroundJob
    from SlideSAMSlicer.writer import read_segment

    if in_process:
        import torch

        from SlideSAMLib import load_model

        torch.set_num_threads(args.threads)
        logic = SlideSAMLogic(model=load_model(device="cpu", encoder=args.encoder))
        engine_pid = os.getpid()
    else:
        from SlideSAMLib.engine_process import LocalEngine

        engine = LocalEngine(encoder=args.encoder, threads=args.threads, log=lambda line: print("engine:", line, file=sys.stderr))
        logic = SlideSAMLogic(engine=engine)
        logic.engine().client()  # started before the clock, as after the first run in Slicer
        engine_pid = engine.pid
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "harness")
    usleep = ctypes.PyDLL(None).usleep  # PyDLL: the GIL is kept during the call, as Slicer's event loop keeps it
    usleep.argtypes = [ctypes.c_uint]
    ticks = 0
    start, cpu = time.perf_counter(), time.process_time()
    job = logic.prepareSegment(node, seg, "kidney_left", box=tuple(ras_of(node, c) for c in box), direction=DIRECTION,
                               sliceRange=args.range)
    if not logic.ensureDependencies(confirm=lambda text: False):
        raise SystemExit("the engine's packages are missing")
    background = BackgroundJob(job.run).start()
    while not background.poll()[0]:
        if args.gil_free:
            time.sleep(TICK_US / 1e6)
        else:
            if args.tick_wait_ms:
                background.wait(args.tick_wait_ms / 1000)  # the tick lets the worker run (Thread.join releases the GIL)
            usleep(TICK_US - int(args.tick_wait_ms * 1000))
        ticks += 1
    wall = time.perf_counter() - start
    if background.error is not None:
        raise SystemExit(background.error_trace)
    report = logic.applyJob(job)
    cpu = time.process_time() - cpu
    mask = read_segment(seg, report.segmentId, node)
    out = {"wall_s": wall, "cpu_s": cpu, "ticks": ticks, "engine_pid": engine_pid, "slices": report.slices, "digest": digest(mask),
           "voxels": int(np.count_nonzero(mask)), "encoder_passes": report.encoderPasses, "engine_seconds": report.seconds}
    if not in_process:
        logic.stopEngine()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["session", "engine", "inthread"])
    parser.add_argument("out")
    parser.add_argument("--encoder", default="auto", choices=["auto", "torch", "onnx"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--range", nargs=2, type=int, default=None, metavar=("A", "B"), help="limit propagation to slices A..B (tests: shorter)")
    parser.add_argument("--large", action="store_true", help="example_ct resampled to 512 x 512 x 300 (a full-size CT's bytes)")
    parser.add_argument("--gil-free", action="store_true", help="engine / inthread: the main thread releases the GIL between ticks")
    parser.add_argument("--tick-wait-ms", type=float, default=0.0, help="engine / inthread: each tick waits this long on the job first (GIL released)")
    args = parser.parse_args()
    out = run_session(args) if args.mode == "session" else run_job(args, in_process=args.mode == "inthread")
    out.update(mode=args.mode, encoder=args.encoder, threads=args.threads, pid=os.getpid(), large=args.large, gil_free=args.gil_free, tick_wait_ms=args.tick_wait_ms,
               model_modules=[m for m in MODEL_MODULES if m in sys.modules])
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "slices"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
