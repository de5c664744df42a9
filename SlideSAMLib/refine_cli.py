"""`slidesam refine`: correct a saved result with clicks on one slice and propagate again from it (`Session.refine`).

    slidesam refine IMAGE RESULT --slice K --point X Y [--negative X Y ...] -o OUT

RESULT is a label map on IMAGE's grid (e.g. what `slidesam segment` wrote); the segment is `--label`'s voxels
(default: every non-zero voxel). X, Y are voxel indices in the slice (i, j for the default --axis k). The slices
of --range (default: all) are re-propagated from slice K, each side until the new masks agree with the saved ones
(`Session.refine` with `current`): only the slices `session.refine_span` names are replaced, the rest of the
segment and other labels stay as they were.
"""
import sys
from pathlib import Path

import numpy as np

from .cli import axis_arg
from .errors import InputError
from .onnx_encoder import ENCODER_BACKENDS, ENCODER_HELP
from .stop_reasons import describe_stops


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "refine",
        help="correct a saved result with include/exclude clicks on one slice and propagate again from it",
        description="Include (--point) and exclude (--negative) clicks on slice K of a saved result correct that slice "
                    "(a box-only model edits its mask; a point-capable one decodes the clicks); propagation then runs "
                    "both ways from it within --range, each way until the new masks agree with the saved ones, and replaces those slices. Each window is encoded once (a new process starts with no embeddings; Session.refine in a script reuses them).",
    )
    p.add_argument("image", help="the volume the result was made on")
    p.add_argument("result", help="the saved result: a label map on the image's grid (.nii.gz, .nrrd, .seg.nrrd)")
    p.add_argument("--slice", type=int, required=True, dest="slice_index", metavar="K", help="the slice to correct (voxel index along --axis)")
    p.add_argument("--point", nargs=2, type=float, action="append", default=[], metavar=("X", "Y"), help="include click (repeatable)")
    p.add_argument("--negative", nargs=2, type=float, action="append", default=[], metavar=("X", "Y"), help="exclude click (repeatable)")
    p.add_argument("--label", type=int, help="the segment's label value in RESULT (default: every non-zero voxel)")
    p.add_argument("--axis", type=axis_arg, choices=["i", "j", "k"], default="k",
                   help="voxel axis the slices are stacked along, as for segment: i, j or k (either case; or 0, 1, 2) (default k)")
    p.add_argument("--range", nargs=2, type=int, metavar=("A", "B"), dest="slice_range", help="re-propagate and replace only slices A..B")
    p.add_argument("--modality", choices=["auto", "ct", "mr"], default="auto")
    p.add_argument("--checkpoint", help="model file or adapter folder (default: the embedded model)")
    p.add_argument("--device", default=None)
    p.add_argument("--encoder", choices=ENCODER_BACKENDS, default=None, help=ENCODER_HELP)
    p.add_argument("--name", default="Segment_1", help="segment name in a .seg.nrrd output")
    p.add_argument("-o", "--output", required=True, help="output label map (.nii.gz / .nrrd) or .seg.nrrd")
    p.set_defaults(func=run)


def run(args) -> int:
    from .imageio import array_of, read_image, write_result
    from .training.dataset import same_grid

    out = Path(args.output)
    if not out.parent.exists():
        raise InputError(f"output folder does not exist: {out.parent}")
    if not args.point and not args.negative:
        raise InputError("no refinement click: give --point X Y (include) and/or --negative X Y (exclude)")
    image, saved = read_image(args.image), read_image(args.result)
    diff = same_grid(image, saved)
    if diff:
        raise InputError(f"result {args.result} is not on the grid of image {args.image} ({diff}): give the result made on this image")
    labels = np.round(array_of(saved)).astype(np.int64)
    segment = labels == args.label if args.label is not None else labels > 0
    if not segment.any():
        raise InputError(f"result {args.result} has no voxel{' of label %d' % args.label if args.label is not None else ''}: give the segment to refine")
    others = labels[~segment & (labels > 0)]
    if others.size and out.name.endswith(".seg.nrrd"):
        raise InputError("the result holds other labels, which a one-segment .seg.nrrd would drop: write a .nii.gz or .nrrd label map")
    if labels.max() > 255 or labels.min() < 0:
        raise InputError(f"result {args.result} has label values outside 0..255, which the output label map cannot hold")
    value = args.label if args.label is not None else int(np.bincount(labels[segment]).argmax())
    axis = "ijk".index(args.axis)
    inplane = [a for a in (0, 1, 2) if a != axis]
    stack = np.moveaxis(segment, 2 - axis, 0)  # (slices along the axis, rows, cols), as the engine's stack
    if not 0 <= args.slice_index < stack.shape[0]:
        raise InputError(f"--slice {args.slice_index} is outside 0..{stack.shape[0] - 1} along {args.axis}: give a slice of the volume")

    def lift(x, y):
        v = [0.0, 0.0, 0.0]
        v[inplane[0]], v[inplane[1]], v[axis] = x, y, float(args.slice_index)
        return tuple(v)

    points = [(lift(x, y), True) for x, y in args.point] + [(lift(x, y), False) for x, y in args.negative]
    from . import Session, load_model
    from .session import refine_span

    model = load_model(args.checkpoint, device=args.device, encoder=args.encoder)
    session = Session(model, array_of(image), modality=args.modality, spacing=image.GetSpacing())
    current = {int(s): stack[s] for s in np.nonzero(stack.any(axis=(1, 2)))[0]}
    res = session.refine(args.slice_index, points, stack[args.slice_index], axis=axis, slice_range=args.slice_range,
                         largest_area=int(stack.reshape(stack.shape[0], -1).sum(axis=1).max()), current=current)
    first, last = refine_span(res, args.slice_range)
    new = np.moveaxis(res.volume_mask().astype(bool), 2 - axis, 0)
    refined = stack.copy()
    refined[first:last + 1] = new[first:last + 1]
    refined = np.moveaxis(refined, 0, 2 - axis)
    labels[segment] = 0
    labels[refined] = value
    write_result(labels, image, out, segment_name=args.name)
    s = res.summary()
    print(f"wrote {out}: slice {args.slice_index} corrected, slices {first}..{last} along {s['axis']} replaced "
          f"(stopped {describe_stops(s['stopped'])}), {s['encoder_passes']} encoder passes, model: {model.source}", file=sys.stdout)
    return 0
