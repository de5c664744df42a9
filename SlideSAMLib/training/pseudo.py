"""`slidesam pseudo2d`: single-slice 2D pseudo-labels from box prompts, to train on with `--pair2d`.

A SAM-family model (the embedded default, or --checkpoint) segments each prompted slice on its own
(the prompt slice of a propagation limited to that slice: same pre-processing and intensity
constraints as `slidesam segment`). The output is a label volume on the image's exact grid in which
only the prompted slices carry labels; `slidesam train --pair2d IMAGE OUT` then uses each of them to
supervise its own slice only (the hybrid loss's 2D term).

PROMPTS.json lists the prompts in voxel indices of axial (k) slices:
    [{"slice": 93, "box": [27, 28, 44, 45], "label": 3}, ...]
Where two prompts of one slice overlap, the earlier one keeps the voxels.
"""
import json
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..onnx_encoder import ENCODER_BACKENDS, ENCODER_HELP

Prompt = Tuple[int, Tuple[float, float, float, float], int]  # slice k, box (x0, y0, x1, y1), label value


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "pseudo2d",
        help="2D pseudo-labels from box prompts on single slices (for train --pair2d)",
        description=__doc__.split("\n\n")[0] + " PROMPTS.json: [{\"slice\": K, \"box\": [X0, Y0, X1, Y1], \"label\": N}, ...] in voxel indices.",
    )
    p.add_argument("image", help="volume: NIfTI, NRRD, any SimpleITK format, or a DICOM folder")
    p.add_argument("--prompts", required=True, help="JSON list of {slice, box, label} in voxel indices (axial k slices)")
    p.add_argument("--checkpoint", help="SAM-family model file or adapter folder (default: the embedded LiteMedSAM model)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N, mps (default: best available)")
    p.add_argument("--encoder", choices=ENCODER_BACKENDS, default=None, help=ENCODER_HELP)
    p.add_argument("--modality", choices=["auto", "ct", "mr"], default="auto")
    p.add_argument("-o", "--output", required=True, help="label volume to write (.nii.gz / .nrrd) on the image's grid")
    p.set_defaults(func=run)


def read_prompts(path, shape_kji: Sequence[int]) -> List[Prompt]:
    """The prompts of a PROMPTS.json, each checked against the volume; one-line InputError otherwise."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"prompts file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"prompts file {path} is not valid JSON ({exc}): give [{{\"slice\": K, \"box\": [X0, Y0, X1, Y1], \"label\": N}}, ...]") from None
    if not isinstance(raw, list) or not raw:
        raise InputError(f"prompts file {path} must hold a non-empty JSON list of {{\"slice\", \"box\", \"label\"}} objects")
    nk, nj, ni = shape_kji
    prompts = []
    for n, item in enumerate(raw):
        where = f"prompt {n} of {path.name}"
        try:
            k, box, label = int(item["slice"]), [float(v) for v in item["box"]], int(item.get("label", 1))
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{where} needs \"slice\" (integer), \"box\" ([X0, Y0, X1, Y1]) and \"label\" (1..255)") from None
        if len(box) != 4:
            raise InputError(f"{where}: \"box\" has {len(box)} numbers, give [X0, Y0, X1, Y1]")
        if not 0 <= k < nk:
            raise InputError(f"{where}: slice {k} is outside the volume (0..{nk - 1})")
        if not 1 <= label <= 255:
            raise InputError(f"{where}: label {label} is not in 1..255")
        x0, x1 = sorted(box[0::2])
        y0, y1 = sorted(box[1::2])
        if x0 < -0.5 or y0 < -0.5 or x1 > ni - 0.5 or y1 > nj - 0.5:
            raise InputError(f"{where}: box {box} is outside the slice (columns 0..{ni - 1}, rows 0..{nj - 1})")
        prompts.append((k, (x0, y0, x1, y1), label))
    return prompts


def pseudo_labels(session, prompts: Sequence[Prompt]) -> np.ndarray:
    """uint8 (k, j, i) volume: each prompt's single-slice mask written with its label, all else 0."""
    out = np.zeros(session.volume.shape, dtype=np.uint8)
    for k, (x0, y0, x1, y1), label in prompts:
        result = session.segment(box=((x0, y0, k), (x1, y1, k)), axis=2, slice_range=(k, k))
        mask = result.slice_masks.get(k)
        if mask is not None:
            out[k][mask & (out[k] == 0)] = label
    return out


def run(args) -> int:
    from .. import Session, array_of, load_model, read_image
    from ..imageio import write_result

    out = Path(args.output)
    if not out.parent.exists():
        raise InputError(f"output folder does not exist: {out.parent}")
    if out.name.endswith(".seg.nrrd") or not any(out.name.endswith(s) for s in (".nii.gz", ".nii", ".nrrd", ".mha")):
        raise InputError(f"output {out.name}: use a .nii.gz or .nrrd label volume (train --pair2d reads it)")
    image = read_image(args.image)
    volume = array_of(image)
    prompts = read_prompts(args.prompts, volume.shape)
    model = load_model(args.checkpoint, device=args.device, encoder=args.encoder)
    labels = pseudo_labels(Session(model, volume, modality=args.modality, spacing=image.GetSpacing()), prompts)
    write_result(labels, image, out)
    empty = sum(1 for k, _, label in prompts if not (labels[k] == label).any())
    print(f"wrote {out}: {len(prompts)} prompted slices, {empty} of them empty; model: {model.source}. "
          f"Train with: slidesam train --pair2d {args.image} {out} ...")
    return 0
