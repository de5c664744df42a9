"""Why one side of a propagation ended, in words: every reason `propagation.py` records in `result.stopped`.

Standard library only (the CLI's `--server` path and thin clients print these without torch).
The thresholds behind each rule are in `propagation.StopRule` and the README ("Why propagation stopped").
"""
from typing import Dict

STOP_REASONS: Dict[str, str] = {
    "volume-end": "reached the edge of the volume",
    "range-end": "reached the end of the slice range",
    "cancelled": "cancelled",
    "vanished": "the structure ended: its mask vanished",
    "tail": "the structure ended: its masks stayed tiny for too many mm",
    "jumped": "the mask disagreed with the neighbouring window's prediction of that slice",
    "grew": "the mask suddenly grew (a leak into a neighbour)",
    "low-iou": "the model's own quality estimate (predicted IoU) was low",
    "intensity": "the mask's voxels did not look like the prompted structure",
    "drifted": "the structure ended: the mask's median intensity drifted too far from the prompted structure's",
    "agrees": "the new mask agreed with the result already there, which is kept from that slice on",
    "departs": "the new mask could not replace the result already there (no overlap, or a stop rule rejected it or it vanished where the result has a mask), which is kept from that slice on",
    "kept": "the corrected slice is empty: nothing to propagate, the result beyond it is kept",
}
# The reasons that say the structure ends on that side: a refinement clears the rest of its range there
# (session.refine_span); after any other reason the result beyond the last written slice is kept.
STRUCTURE_ENDS = ("vanished", "tail", "jumped", "grew", "low-iou", "intensity", "drifted")

SIDE_WORDS = {"up": "up (higher slice indices)", "down": "down (lower slice indices)"}


def describe_stop(reason: str) -> str:
    """One reason in words, with its code for looking it up; an unknown code is shown as itself, marked so."""
    words = STOP_REASONS.get(reason)
    return f"{words} ({reason})" if words else f"{reason} (a reason this version does not describe)"


def describe_stops(stopped: Dict[str, str]) -> str:
    """{'up': 'vanished', 'down': 'volume-end'} -> 'up (higher slice indices): the structure ended: ...; down ...'."""
    if not stopped:
        return "nothing was propagated"
    order = sorted(stopped, key=lambda side: (side != "up", side))
    return "; ".join(f"{SIDE_WORDS.get(side, side)}: {describe_stop(stopped[side])}" for side in order)
