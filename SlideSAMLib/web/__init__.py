"""`slidesam web`: a browser annotator on real Slicer views (Kitware's trame-slicer), the engine in its own process."""
