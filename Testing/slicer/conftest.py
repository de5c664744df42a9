"""Real MRML without the Slicer application: slicer-core's scene and module logics, plus small stand-ins.

slicer-core (PyPI) is Slicer's real MRML and slicer.util, but without the application: no `slicer.app`,
`slicer.mrmlScene`, `slicer.modules`, qt, ctk or ScriptedLoadableModule.  So the harness makes what the
application would: a vtkSlicerApplicationLogic owning the scene, the colors (with their default color nodes) /
subject hierarchy / volumes / segmentations / markups logics each given the scene and the application logic and
registered with it (SetModuleLogic), and `slicer.mrmlScene`, `slicer.modules.<name>.logic()`, `slicer.app`
provided as slicer.util expects.  The application logic is kept in a module global for the whole session: a
dropped one leaves the logics with dangling pointers and segfaults.
"""
import sys
import types
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STANDINS = HERE / "standins"


def _makes_this_folder_a_slicer_portion(entry: str) -> bool:
    # A sys.path entry holding this folder (named "slicer") would add it to the real slicer package.
    try:
        return (Path(entry or ".").resolve() / "slicer") == HERE
    except OSError:
        return False


sys.path[:] = [p for p in sys.path if not _makes_this_folder_a_slicer_portion(p)]
for path in (STANDINS, ROOT / "SlideSAM", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

if "slicer" in sys.modules:  # imported earlier without the stand-ins: add them to its path now
    sys.modules["slicer"].__path__.append(str(STANDINS / "slicer"))

import slicer  # noqa: E402

slicer.__path__[:] = [p for p in slicer.__path__ if Path(p).resolve() != HERE]  # in case it was imported earlier
import slicer.ScriptedLoadableModule  # noqa: E402,F401

_KEEP_ALIVE = {}


def make_mrml():
    """A scene with the application logic and the module logics slicer.util needs."""
    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    logics = {
        "Colors": slicer.vtkSlicerColorLogic(),
        "SubjectHierarchy": slicer.vtkSlicerSubjectHierarchyModuleLogic(),
        "Volumes": slicer.vtkSlicerVolumesLogic(),
        "Segmentations": slicer.vtkSlicerSegmentationsModuleLogic(),
        "Markups": slicer.vtkSlicerMarkupsLogic(),
    }
    for name, logic in logics.items():
        logic.SetMRMLApplicationLogic(app)
        logic.SetMRMLScene(scene)
        app.SetModuleLogic(name, logic)
    logics["Colors"].AddDefaultColorNodes()
    slicer.mrmlScene = scene
    slicer.app = types.SimpleNamespace(applicationLogic=lambda: app, mrmlScene=lambda: scene)
    slicer.modules = types.SimpleNamespace(
        volumes=types.SimpleNamespace(logic=lambda: logics["Volumes"]),
        segmentations=types.SimpleNamespace(logic=lambda: logics["Segmentations"]),
        markups=types.SimpleNamespace(logic=lambda: logics["Markups"]),
    )
    _KEEP_ALIVE["mrml"] = (scene, app, logics)
    return scene, logics


@pytest.fixture(scope="session")
def mrml():
    scene, logics = make_mrml()
    yield types.SimpleNamespace(scene=scene, volumes=logics["Volumes"], segmentations=logics["Segmentations"])


@pytest.fixture(scope="session")
def slidesam_model(model):
    """The session's embedded model (Testing/conftest.py), injected into the logic: loaded once."""
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))
    return model


@pytest.fixture(scope="module")
def ct(mrml, data_dir):
    """example_ct loaded as a real scalar volume node, with its left-kidney reference (slicer_data.load_kidney_ct)."""
    from slicer_data import load_kidney_ct

    return load_kidney_ct(mrml, data_dir)


@pytest.fixture(scope="module")
def window(ct):
    """Slices k-4..k+4 around the kidney's prompt slice: a short propagation for the engine-path tests."""
    return (ct.k - 4, ct.k + 4)
