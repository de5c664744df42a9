"""Keyboard shortcuts of the SlideSAM module — one table used by the widget and the help text."""

# (action name used by the widget, key sequence, what it does)
SHORTCUTS = [
    ("placeBox", "Ctrl+Alt+B", "place a box (ROI) on the current slice view"),
    ("placeInclude", "Ctrl+Alt+I", "place an include point"),
    ("placeExclude", "Ctrl+Alt+E", "place an exclude point"),
    ("propagate", "Ctrl+Alt+P", "propagate from the prompt"),
    ("restart", "Ctrl+Alt+R", "restart from the slice shown in the prompt's view (after a correction)"),
    ("refine", "Ctrl+Alt+F", "refine: the include / exclude points on the slice shown in the prompt's view correct it, then it propagates both ways"),
    ("cancel", "Ctrl+Alt+C", "cancel the running propagation (slices already done are kept)"),
    ("undo", "Ctrl+Alt+Z", "undo the last SlideSAM run"),
]


def shortcuts_help_html() -> str:
    rows = "".join(f"<li><b>{key}</b>: {text}</li>" for _, key, text in SHORTCUTS)
    return f"<p>Shortcuts:</p><ul>{rows}</ul>"
