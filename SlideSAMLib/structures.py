"""`--structures` (names or label numbers) resolved against label-name maps: one check, one error line.

Used by `slidesam train` (training/dataset.py) and `slidesam eval` (evaluation/evaluate.py, evaluation/cli.py).
"""
import difflib
from typing import Dict, List, Optional, Sequence

from .errors import InputError


def parse_structures(text: Optional[str]) -> Optional[List[str]]:
    """'liver, 3,spleen' -> ['liver', '3', 'spleen']; None or '' -> None (every structure)."""
    items = [s.strip() for s in (text or "").split(",") if s.strip()]
    return items or None


def check_structure_names(wanted: Sequence[str], name_maps: Sequence[Dict[int, str]], map_hint: str = "give a label-name map") -> None:
    """One line naming every unknown name in `wanted` and listing the valid ones; label numbers always pass."""
    known = sorted({n for m in name_maps for n in m.values()})
    unknown = [s for s in (x.strip() for x in wanted) if s and not s.isdigit() and s not in known]
    if not unknown:
        return
    what = ("unknown structure " if len(unknown) == 1 else "unknown structures ") + ", ".join(f"'{s}'" for s in unknown)
    if not known:
        raise InputError(f"{what}: no label-name map was given, so --structures takes label numbers only; or {map_hint}")
    close = [c for s in unknown for c in (difflib.get_close_matches(s, known, n=3, cutoff=0.6) or [n for n in known if s.lower() in n.lower()][:3])]
    hint = f" (did you mean {', '.join(dict.fromkeys(close))}?)" if close else ""
    raise InputError(f"{what}{hint}: valid names are {', '.join(known)} (or label numbers); check --structures")


def resolve_structures(wanted: Optional[Sequence[str]], names: Dict[int, str], present: Sequence[int]) -> List[int]:
    """The label values of `wanted` (names via `names`, or numbers) that are `present`; all present when None.

    Names unknown to this map are skipped: `check_structure_names` checks them against all maps first.
    """
    if not wanted:
        return list(present)
    by_name = {n: v for v, n in names.items()}
    chosen = []
    for s in (x.strip() for x in wanted):
        value = int(s) if s.isdigit() else by_name.get(s)
        if value is not None and value in present and value not in chosen:
            chosen.append(value)
    return chosen
