"""The `slidesam` command: segment, info — and train / eval / serve from their own modules.

Every user-facing failure is a `SlideSAMError`: printed as one line on stderr, exit code 2,
no traceback and no output file.

Nothing here, nor in the sub-command modules' `add_parser`, imports torch: `slidesam --help`,
`--version` and argument errors answer at once; torch is imported by the command that needs it
(Testing/engine/test_cli_firstrun.py checks this).
"""
import argparse
import importlib
import logging
import sys
import traceback
from pathlib import Path
from typing import List, Optional

import numpy as np

from ._version import __version__
from .errors import InputError, SlideSAMError
from .onnx_encoder import ENCODER_BACKENDS, ENCODER_HELP
from .stop_reasons import describe_stops
from .wire import PROMPT_KINDS

# Sub-commands that live in their own modules; each module has add_parser(subparsers) and run(args).
EXTRA_COMMANDS = {
    "train": "SlideSAMLib.training.cli",
    "pseudo2d": "SlideSAMLib.training.pseudo",
    "eval": "SlideSAMLib.evaluation.cli",
    "refine": "SlideSAMLib.refine_cli",
    "serve": "SlideSAMLib.server.cli",
    "web": "SlideSAMLib.web.cli",
}


def axis_arg(text: str) -> str:
    """The slice axis as i, j or k: the letters in either case, or 0, 1, 2 (as the Python API and Slicer logic take)."""
    text = text.strip().lower()
    return "ijk"[int(text)] if text in ("0", "1", "2") else text


def _add_segment(sub) -> None:
    p = sub.add_parser(
        "segment",
        help="propagate a box / click prompt through a volume",
        description="Segment one structure from a prompt on one slice and write it on the input's exact grid.",
    )
    p.add_argument("image", help="volume: NIfTI, NRRD, any SimpleITK format, or a DICOM folder")
    p.add_argument("--box", nargs=4, type=float, metavar=("X0", "Y0", "X1", "Y1"),
                   help="two opposite box corners on the prompt slice: X = column i, Y = row j for the default --axis k "
                        "(for --axis i / j: the two other axes in i, j, k order); voxel indices unless --coords")
    p.add_argument("--slice", type=float, dest="slice_index", metavar="K", help="prompt slice index along --axis (voxel coords) or its coordinate in mm (lps/ras)")
    p.add_argument("--point", nargs=2, type=float, action="append", default=[], metavar=("X", "Y"), help="include click, X and Y as for --box (repeatable)")
    p.add_argument("--negative", nargs=2, type=float, action="append", default=[], metavar=("X", "Y"), help="exclude click, X and Y as for --box (repeatable)")
    p.add_argument("--axis", type=axis_arg, choices=["i", "j", "k"], default="k",
                   help="voxel axis the slices are stacked along: i, j or k (either case; or 0, 1, 2) (default k: axial for most scans)")
    p.add_argument("--direction", choices=["both", "up", "down"], default="both", help="propagate both ways, or towards higher (up) / lower (down) slice indices")
    p.add_argument("--range", nargs=2, type=int, metavar=("A", "B"), dest="slice_range", help="limit propagation to slices A..B")
    p.add_argument("--coords", choices=["voxel", "lps", "ras"], default="voxel", help="coordinates of --box/--point/--slice (default voxel indices)")
    p.add_argument("--modality", choices=["auto", "ct", "mr"], default="auto",
                   help="intensity normalisation: ct (Hounsfield units) or mr; auto (default) decides from the image")
    p.add_argument("--checkpoint", help="model file or adapter folder (default: the embedded LiteMedSAM model)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N, mps (default: best available)")
    p.add_argument("--encoder", choices=ENCODER_BACKENDS, default=None, help=ENCODER_HELP)
    p.add_argument("--server", metavar="URL", help="run on a SlideSAM server ('slidesam serve') instead of locally, e.g. http://gpu-box:8765")
    p.add_argument("--api-key", help="the server's API key (default: $SLIDESAM_API_KEY)")
    p.add_argument("--name", default="Segment_1", help="segment name in a .seg.nrrd output")
    p.add_argument("-o", "--output", required=True, help="output: .nii.gz / .nrrd label map or .seg.nrrd segmentation")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_segment)


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="describe an image or a checkpoint")
    p.add_argument("file")
    p.set_defaults(func=run_info)


def build_parser(with_extras: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slidesam", description="Slide-SAM: prompt-driven 3D segmentation by a three-slice SAM.")
    parser.add_argument("--version", action="version", version=f"slidesam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_segment(sub)
    _add_info(sub)
    if with_extras:
        for name, module in EXTRA_COMMANDS.items():
            try:
                mod = importlib.import_module(module)
            except ImportError as exc:
                _add_broken(sub, name, module, exc)  # listed, and running it says why: never silently missing
                continue
            mod.add_parser(sub)
    return parser


def _add_broken(sub, name: str, module: str, exc: ImportError) -> None:
    """A sub-command whose module fails to import: shown in --help with the reason; running it is an error."""
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    reason = f"{type(exc).__name__}: {exc}" + (f" ({Path(where.filename).name}:{where.lineno})" if where else "")
    # No option syntax of its own (prefix_chars): whatever follows is taken, and the error says why it cannot run.
    p = sub.add_parser(name, help=f"UNAVAILABLE: {module} does not import ({reason})", add_help=False, prefix_chars="\x00")
    p.add_argument("rest", nargs="*")

    def run_broken(args) -> int:
        raise InputError(
            f"the '{name}' command is unavailable: {module} does not import ({reason}); "
            "reinstall SlideSAM (pip install -e .) or report this as a bug"
        )

    p.set_defaults(func=run_broken)


def _world_axis_of(image) -> List[int]:
    """For each voxel axis (i, j, k), the world (LPS) axis it runs along; refuses oblique volumes."""
    direction = np.array(image.GetDirection()).reshape(3, 3)  # columns: voxel axes in LPS
    owners = [int(np.argmax(np.abs(direction[:, a]))) for a in range(3)]
    if len(set(owners)) < 3 or np.min(np.max(np.abs(direction), axis=0)) < 0.999:
        raise InputError("the volume is oblique (its axes are not along L, P, S): give the prompt with --coords voxel")
    return owners


def prompt_from_args(args, image):
    """(box corners, points, axis) in voxel (i, j, k) from the CLI's 2D coordinates on one slice.

    voxel: X, Y are the in-plane voxel indices (i, j for an axial --axis k) and K the slice index.
    lps/ras: X, Y, K are world coordinates (mm) along the world axes those voxel axes run along.
    """
    if args.box is None and not args.point:
        if args.negative:
            raise InputError("only exclude clicks (--negative) were given: add an include click (--point X Y) or a box (--box X0 Y0 X1 Y1)")
        raise InputError("empty prompt: give --box X0 Y0 X1 Y1 and/or --point X Y")
    if args.slice_index is None:
        raise InputError("--slice K is needed: the index of the slice the prompt is drawn on")
    axis = "ijk".index(args.axis)
    inplane = [a for a in (0, 1, 2) if a != axis]
    owners = _world_axis_of(image) if args.coords != "voxel" else None

    def lift(x, y):
        v = [0.0, 0.0, 0.0]
        v[inplane[0]], v[inplane[1]], v[axis] = x, y, args.slice_index
        if args.coords == "voxel":
            return tuple(v)
        world = np.array(image.TransformContinuousIndexToPhysicalPoint((0.0, 0.0, 0.0)))
        for voxel_axis, value in enumerate(v):
            world[owners[voxel_axis]] = -value if args.coords == "ras" and owners[voxel_axis] < 2 else value
        return tuple(image.TransformPhysicalPointToContinuousIndex(tuple(float(w) for w in world)))

    _check_slice(args, image, axis, lift(0.0, 0.0)[axis])
    box = None
    if args.box is not None:
        x0, y0, x1, y1 = args.box
        box = (lift(x0, y0), lift(x1, y1))
    points = [(lift(x, y), True) for x, y in args.point] + [(lift(x, y), False) for x, y in args.negative]
    return box, points, axis


def _check_slice(args, image, axis: int, k: float) -> None:
    """The prompt slice must be one of the volume's slices along the axis (the same bounds as a voxel's)."""
    n = image.GetSize()[axis]
    if -0.5 <= k <= n - 0.5:
        return
    given = f"--slice {args.slice_index:g}" + ("" if args.coords == "voxel" else f" ({args.coords} mm, slice index {k:.1f})")
    raise InputError(
        f"{given} is out of range: outside the volume, whose slices along {'ijk'[axis]} are 0..{n - 1}; give a slice inside it"
    )


class _ProgressBar:
    """Slices done so far, with the current one: where propagation will stop is not known in advance, so the bar
    has no total (a fraction of the whole volume ended far below 100 % on every organ shorter than the scan).

    Each propagation step reports a fraction > 0; the 0.0 reports are set-up (the prompt slice, an upload).
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.bar = None
        self.slices = 0

    def __call__(self, fraction: float, message: str) -> None:
        if fraction > 0:
            self.slices += 1
        if not self.enabled:
            return
        if self.bar is None:  # created at the first report, after the model has loaded (and printed any export line)
            from tqdm import tqdm

            self.bar = tqdm(total=None, desc="propagating", bar_format="{desc}: {n_fmt} slices done [{elapsed}{postfix}]",
                            file=sys.stderr, leave=False)
        self.bar.n = self.slices
        self.bar.set_postfix_str(message)  # refreshes the display

    def close(self):
        if self.bar is not None:
            self.bar.close()


def run_segment(args) -> int:
    from .imageio import array_of, read_image, write_result  # no torch: the --server path runs without it

    out = Path(args.output)
    if not out.parent.exists():
        raise InputError(f"output folder does not exist: {out.parent}")
    if not any(out.name.endswith(s) for s in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")):
        raise InputError(f"output {out.name}: use a .nii.gz, .nrrd or .seg.nrrd file name")
    image = read_image(args.image)
    box, points, axis = prompt_from_args(args, image)
    bar = _ProgressBar(not args.quiet)
    try:
        if args.server:
            from .client import segment_via_server

            result = segment_via_server(args, image, box, points, axis, progress=bar)
            source = f"{result.model} at {args.server}"
        else:
            from . import Session, load_model

            model = load_model(args.checkpoint, device=args.device, encoder=args.encoder)
            session = Session(model, array_of(image), modality=args.modality, spacing=image.GetSpacing())
            result = session.segment(box=box, points=points, axis=axis, direction=args.direction, slice_range=args.slice_range, progress=bar)
            source = model.source
    finally:
        bar.close()
    write_result(result.volume_mask(), image, out, segment_name=args.name)
    print(result_line(out, result.summary(), source))
    return 0


def result_line(out, s: dict, source: str) -> str:
    """The last line of `slidesam segment`: what was written and, in words, why each side stopped."""
    return (
        f"wrote {out}: slices {s['slices'][0]}..{s['slices'][-1]} along {s['axis']} ({s['slices_written']} slices); "
        f"stopped {describe_stops(s['stopped'])}; {s['encoder_passes']} encoder passes, {s['seconds']} s; model: {source}; "
        f"prompt: {PROMPT_KINDS.get(s['prompt'], s['prompt'])}"
    )


def run_info(args) -> int:
    from . import describe_checkpoint, describe_image, read_image

    path = Path(args.file)
    if not path.exists():
        raise InputError(f"file not found: {path}")
    if path.is_dir() and not (path / "slidesam_adapter.json").exists() or path.name.endswith((".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".dcm")):
        print(describe_image(read_image(path), str(path)))
    else:
        print(f"{path}: " + describe_checkpoint(path))
    return 0


class _StderrLines(logging.Handler):
    """One line per record on the current sys.stderr (looked up at each record, not kept)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr, flush=True)


def _log_to_stderr() -> None:
    """On a terminal, the engine's INFO lines (e.g. the one-time ONNX export of the encoder, which takes a while
    and would otherwise look like a hang) on stderr, beside the progress bar; once per process."""
    if not sys.stderr.isatty():
        return  # scripts and logs get the result and the errors only, as before
    logger = logging.getLogger("slidesam")
    if not any(isinstance(h, _StderrLines) for h in logger.handlers):
        logger.addHandler(_StderrLines())
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _log_to_stderr()
    try:
        return int(args.func(args) or 0)
    except SlideSAMError as exc:
        print(f"slidesam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("slidesam: cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
