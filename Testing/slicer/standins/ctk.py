"""Stand-in for PythonQt's `ctk` (tests only)."""
