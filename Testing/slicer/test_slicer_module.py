"""Module metadata, shortcuts in the help, dependency installer decisions, the background job."""
import sys
import threading
import time
import types

import pytest
import slicer

import SlideSAM
from SlideSAMSlicer import dependencies
from SlideSAMSlicer.shortcuts import SHORTCUTS
from SlideSAMSlicer.worker import BackgroundJob


def test_module_metadata_and_help_lists_every_shortcut():
    parent = types.SimpleNamespace()
    SlideSAM.SlideSAM(parent)
    assert parent.title == "SlideSAM" and parent.categories == ["Segmentation"]
    for _name, key, _text in SHORTCUTS:
        assert key in parent.helpText
    assert len({key for _, key, _ in SHORTCUTS}) == len(SHORTCUTS)
    assert {name for name, _, _ in SHORTCUTS} == {"placeBox", "placeInclude", "placeExclude", "propagate", "restart", "refine", "cancel", "undo"}
    assert "2311.10121" in parent.acknowledgementText and "MIDL 2024" in parent.acknowledgementText
    # Slicer places an ROI with two clicks (on release), not a drag (vtkSlicerROIWidget / vtkMRMLMarkupsROINode).
    assert "drag" not in parent.helpText.lower() and "two opposite corners" in parent.helpText


def test_engine_requirements_are_pyprojects_own():
    import tomllib

    project = tomllib.loads(dependencies.PYPROJECT.read_text())["project"]
    expected = project["dependencies"] + project["optional-dependencies"]["server"]
    assert dependencies.requirements() == expected and "torch>=2.14.1" in expected and any(r.startswith("uvicorn") for r in expected)
    text = dependencies.PYPROJECT.read_text()  # the reader for Pythons without tomllib (Slicer 5.8's 3.9) gives the same list
    assert dependencies._toml_array(text, "dependencies") + dependencies._toml_array(text, "server") == expected


def test_no_install_when_the_engines_python_has_everything(monkeypatch):
    monkeypatch.setattr(dependencies, "_pip_install", lambda *a: pytest.fail("pip called"))
    assert dependencies.missing_packages(sys.executable) == []
    assert dependencies.ensure_dependencies(sys.executable, confirm=lambda text: pytest.fail("asked although nothing is missing"))


def test_missing_packages_are_checked_in_the_engines_python_and_declining_installs_nothing(monkeypatch):
    reqs = dependencies.requirements() + ["slidesam-no-such-package==1.0", "numpy<1"]
    monkeypatch.setattr(dependencies, "requirements", lambda: reqs)
    monkeypatch.setattr(dependencies, "_pip_install", lambda *a: pytest.fail("pip called"))
    assert dependencies.missing_packages(sys.executable) == ["slidesam-no-such-package==1.0", "numpy<1"]  # numpy is there, but not <1
    asked = []
    assert dependencies.ensure_dependencies(sys.executable, confirm=lambda text: asked.append(text) or False) is False
    assert "slidesam-no-such-package==1.0" in asked[0] and sys.executable in asked[0]


def test_nothing_is_installed_under_testing(monkeypatch):
    monkeypatch.setattr(dependencies, "requirements", lambda: ["slidesam-no-such-package==1.0"])
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(testingEnabled=lambda: True), raising=False)
    with pytest.raises(dependencies.EngineError, match="nothing is installed under --testing"):
        dependencies.ensure_dependencies(sys.executable, confirm=lambda text: pytest.fail("asked under --testing"))


def test_torch_for_slicers_python_without_the_pytorch_extension_says_how_to_fix(monkeypatch):
    monkeypatch.setattr(dependencies, "requirements", lambda: ["torch==99.0"])
    monkeypatch.setattr(dependencies, "is_slicer_python", lambda python: True)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # the extension is not installed
    with pytest.raises(dependencies.EngineError, match="Extensions Manager"):
        dependencies.ensure_dependencies(sys.executable, confirm=lambda text: True)


def test_a_failed_torch_install_through_the_pytorch_extension_is_one_line(monkeypatch):
    """PyTorchUtilsLogic.installTorch (SlicerPyTorch e1c85cc PyTorchUtils.py:194-227) runs light-the-torch with
    slicer.util._executePythonModule, whose logProcessOutput raises CalledProcessError when it fails."""
    import subprocess

    def installTorch(askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None, torchvisionVersionRequirement=None):
        raise subprocess.CalledProcessError(1, ["PythonSlicer", "-m", "light_the_torch", "install", "torch" + torchVersionRequirement])

    monkeypatch.setattr(dependencies, "requirements", lambda: ["torch==99.0"])
    monkeypatch.setattr(dependencies, "is_slicer_python", lambda python: True)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=lambda: types.SimpleNamespace(installTorch=installTorch)))
    with pytest.raises(dependencies.EngineError, match="PyTorch installation failed .*exit code 1.*'PyTorch Utils'") as error:
        dependencies.ensure_dependencies(sys.executable, confirm=lambda text: True)
    assert "\n" not in str(error.value)


def test_packages_are_installed_into_the_engines_python_after_consent(monkeypatch):
    reqs = ["numpy>=1.24", "slidesam-no-such-package==1.0"]
    installed = []

    def pip_install(python, missing, status):
        installed.append((python, missing))
        reqs.remove("slidesam-no-such-package==1.0")  # as if pip had installed it

    monkeypatch.setattr(dependencies, "requirements", lambda: reqs)
    monkeypatch.setattr(dependencies, "_pip_install", pip_install)
    assert dependencies.ensure_dependencies(sys.executable, confirm=lambda text: True)
    assert installed == [(sys.executable, ["slidesam-no-such-package==1.0"])]


def test_background_job_reports_progress_cancel_and_errors():
    release = threading.Event()

    def work(progress, cancel):
        progress(0.5, "half")
        release.wait(5)
        return "cancelled" if cancel() else "finished"

    job = BackgroundJob(work).start()
    deadline = time.time() + 5
    while job.fraction < 0.5 and time.time() < deadline:
        time.sleep(0.01)
    assert job.poll()[1:] == (0.5, "half") and not job.poll()[0]
    job.cancel()
    release.set()
    assert job.wait(5) and job.poll()[0] and job.result == "cancelled"

    failing = BackgroundJob(lambda progress, cancel: 1 / 0).start()
    assert failing.wait(5) and isinstance(failing.error, ZeroDivisionError) and "ZeroDivisionError" in failing.error_trace
