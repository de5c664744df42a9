"""`slidesam eval`: simulated prompts on labelled volumes -> eval.json, eval.md and PNG figures."""
import sys
from pathlib import Path

from ..errors import InputError
from ..onnx_encoder import ENCODER_BACKENDS, ENCODER_HELP


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a model on labelled volumes with simulated prompts",
        description="Per structure: one tight box on its largest slice, jittered boxes and one include click (the box search for a box-only model), "
                    "each propagated; beside them the chain and oracle anchors and the CVPR 2025 interactive protocol; 3D Dice, surface Dice 2 mm, HD95, slice extent, encoder passes, "
                    "seconds; and the labelling-efficiency simulation.",
    )
    p.add_argument("--case", nargs="+", action="append", default=[], metavar="FILE",
                   help="IMAGE LABEL [NAMES.json]: a volume (file or DICOM folder) and its label map on the same grid (repeatable)")
    p.add_argument("--structures", help="comma-separated names or label numbers (default: every label present)")
    p.add_argument("--checkpoint", help="model file or adapter folder (default: the embedded model)")
    p.add_argument("--device", default=None)
    p.add_argument("--encoder", choices=ENCODER_BACKENDS, default=None, help=ENCODER_HELP)
    p.add_argument("-o", "--out", required=True, help="output folder (eval.json, eval.md, one PNG per structure)")
    p.add_argument("--jitter", type=int, default=2, help="jittered-box runs per structure")
    p.add_argument("--no-efficiency", action="store_true", help="skip the correction-loop simulation")
    p.add_argument("--no-interactive", action="store_true", help="skip the CVPR 2025 protocol (a box, then five refinement clicks)")
    p.add_argument("--no-anchors", action="store_true", help="skip the chain and oracle anchors (SlideSAMLib/evaluation/anchors.py)")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..checkpoint import load_model
    from ..training.dataset import read_label_names
    from ..structures import check_structure_names, parse_structures
    from .evaluate import evaluate, load_case
    from .metrics import monai_metrics
    from .report import figure, pyplot, safe_name, write_json, write_markdown

    if not args.case:
        raise InputError("no evaluation data: give --case IMAGE LABEL [NAMES.json] (repeatable)")
    monai_metrics()  # the `eval` extra: say so before any work, not after the evaluation
    if not args.no_figures:
        pyplot()  # matplotlib is optional: say so before any work, not after the evaluation
    if args.jitter < 0:
        raise InputError("--jitter must be 0 or more")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file: give a folder")
    wanted = parse_structures(args.structures)
    for item in args.case:
        if len(item) not in (2, 3):
            raise InputError(f"--case takes IMAGE LABEL [NAMES.json], got {len(item)} values")
    if wanted:
        check_structure_names(wanted, [read_label_names(item[2]) for item in args.case if len(item) == 3], map_hint="give NAMES.json as --case's third value")
    cases = []
    for item in args.case:
        cases.append(load_case(item[0], item[1], item[2] if len(item) == 3 else None, wanted))
    model = load_model(args.checkpoint, device=args.device, encoder=args.encoder)
    out.mkdir(parents=True, exist_ok=True)
    figs = None
    if not args.no_figures:
        figs = lambda case, res, data: figure(case, res, data, out / f"{safe_name(case.name)}_{safe_name(res['structure'])}.png")
    report = evaluate(model, cases, jitter=args.jitter, with_efficiency=not args.no_efficiency,
                      seed=args.seed, progress=lambda m: print(f"evaluating {m}", file=sys.stderr), figures=figs,
                      with_anchors=not args.no_anchors, with_interactive=not args.no_interactive,
                      partial=lambda so_far: write_json(so_far, out / "eval.json"))  # a stopped run keeps its finished structures
    write_json(report, out / "eval.json")
    write_markdown(report, out / "eval.md")
    s = report["summary"]
    box = s.get("box", {})
    print(f"wrote {out / 'eval.json'} and eval.md: {len(report['results'])} structures, mean box Dice {box.get('mean_dice', float('nan')):.3f}"
          + (f", click/box {s['point_vs_box_mean']:.2f}" if "point_vs_box_mean" in s else "")
          + (f", chain {s['anchors']['mean_dice_chain']:.3f}, oracle {s['anchors']['mean_dice_oracle']:.3f}" if "anchors" in s else "")
          + (f", interactive Dice AUC {s['interactive']['mean_dice_auc']:.3f}" if "interactive" in s else "")
          + f", {report['seconds']} s")
    return 0
