"""Stand-in for PythonQt's `qt` (tests only): SlideSAM.py imports it; only the widget uses it, never the logic."""
