"""The engine's Python packages: read from pyproject.toml, checked in the engine's own Python, installed only if the user agrees.

The engine runs in its own process (SlideSAMLib.engine_process), so its packages belong to the Python that
process runs: Slicer's PythonSlicer by default, or one the user names.  Nothing here imports them.
When that Python is Slicer's own, torch comes from the PyTorch extension (PyTorchUtils picks the build matching
the GPU driver, so a CPU-only wheel is not installed by mistake); everything else through `<python> -m pip`,
after torch, so that pip does not pull a generic torch wheel in.  Under Slicer's --testing nothing is installed.
"""
import ast
import json
import re
import subprocess
from pathlib import Path
from typing import Callable, List, Optional

from SlideSAMLib.engine_process import LIB_PARENT, EngineError, check_python, default_python, hidden_window, is_slicer_python, python_environment

PYPROJECT = Path(LIB_PARENT) / "pyproject.toml"  # the repository root; the extension build puts it beside SlideSAMLib
EXTRAS = ("server",)  # the engine process is `slidesam serve`: FastAPI and uvicorn too

# Run in the engine's Python: which requirements are not installed or not satisfied (JSON list on stdout).
_PROBE = r"""
import json, re, sys
from importlib import metadata
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
missing = []
for text in json.loads(sys.argv[1]):
    req = Requirement(text)
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        missing.append(text)
        continue
    if req.specifier and not req.specifier.contains(version, prereleases=True):
        missing.append(text)
print(json.dumps(missing))
"""


def _toml_array(text: str, key: str) -> List[str]:
    """The string array `key = [...]` of a TOML text (tomllib where the Python has it; Slicer 5.8's 3.9 has not)."""
    match = re.search(rf"^{re.escape(key)}\s*=\s*(\[.*?\])", text, re.MULTILINE | re.DOTALL)
    if match is None:
        raise EngineError(f"{PYPROJECT} has no '{key}' list: reinstall the SlideSAM extension")
    body = "\n".join(line.split("#", 1)[0] for line in match.group(1).splitlines())
    return [str(v) for v in ast.literal_eval(body)]


def requirements(pyproject: Path = PYPROJECT) -> List[str]:
    """The engine's pip requirements: [project] dependencies plus the server extra, as pyproject.toml pins them."""
    try:
        text = pyproject.read_text()
    except OSError as exc:
        raise EngineError(f"cannot read the engine's package list {pyproject} ({exc.strerror}): reinstall the SlideSAM extension") from None
    try:
        import tomllib
    except ImportError:
        return _toml_array(text, "dependencies") + [r for extra in EXTRAS for r in _toml_array(text, extra)]
    project = tomllib.loads(text)["project"]
    return list(project["dependencies"]) + [r for extra in EXTRAS for r in project["optional-dependencies"][extra]]


def missing_packages(python: Optional[str] = None, reqs: Optional[List[str]] = None) -> List[str]:
    """Requirements that `python` (default: the engine's default Python) does not satisfy ('torch...' first when missing)."""
    python = python or default_python()
    reqs = requirements() if reqs is None else reqs
    try:
        out = subprocess.run([python, "-c", _PROBE, json.dumps(reqs)], capture_output=True, text=True, timeout=120, env=python_environment(python), **hidden_window())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineError(f"cannot check the packages of '{python}' ({type(exc).__name__}): name a working Python >= 3.10 in SlideSAM's Engine Python field") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise EngineError(f"cannot check the packages of '{python}' ({last}): install pip into it, or name another Python >= 3.10")
    missing = json.loads(out.stdout.strip().splitlines()[-1])
    return sorted(missing, key=lambda r: not r.startswith("torch"))


def _testing() -> bool:
    import slicer

    app = getattr(slicer, "app", None)
    return bool(app is not None and hasattr(app, "testingEnabled") and app.testingEnabled())


def ensure_dependencies(python: Optional[str] = None, confirm: Optional[Callable[[str], bool]] = None,
                        status: Optional[Callable[[str], None]] = None) -> bool:
    """True when the engine's Python has every package; otherwise ask (`confirm(text)`), install there, report.

    Returns False when the user declines; raises EngineError with a one-line fix when the Python cannot run the
    engine (< 3.10), under --testing, or when installing fails.
    """
    python = python or default_python()
    check_python(python)
    missing = missing_packages(python)
    if not missing:
        return True
    if _testing():
        raise EngineError(f"the engine's Python lacks {', '.join(missing)} and nothing is installed under --testing: install them before running the tests")
    import slicer

    confirm = confirm or (lambda text: slicer.util.confirmOkCancelDisplay(text, "SlideSAM: install Python packages"))
    status = status or (lambda text: None)
    text = (f"SlideSAM's engine needs these Python packages in {python}: {', '.join(missing)}. "
            "Install them now? (needs a network connection; torch is several hundred MB)")
    if not confirm(text):
        return False
    torch = [r for r in missing if re.match(r"torch\b", r) and not r.startswith("torchvision")]
    if torch and is_slicer_python(python):
        try:
            import PyTorchUtils
        except ImportError:
            raise EngineError("torch is missing and the PyTorch extension is not installed: install 'PyTorch' from the Extensions Manager, restart Slicer, try again") from None
        status("installing torch via the PyTorch extension")
        spec = torch[0][len("torch"):].strip()
        try:  # installTorch runs light-the-torch through slicer.util._executePythonModule: a failed install raises CalledProcessError
            installed = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=spec)
        except subprocess.CalledProcessError as exc:
            raise EngineError(f"PyTorch installation failed (light-the-torch exit code {exc.returncode}; see Slicer's log): "
                              "open the 'PyTorch Utils' module, install torch there, try again") from None
        if installed is None:
            raise EngineError("PyTorch installation did not complete: open the 'PyTorch Utils' module, install torch there, try again")
    rest = missing_packages(python)
    if rest:
        _pip_install(python, rest, status)
    still = missing_packages(python)
    if still:
        raise EngineError(f"these packages are still missing in {python} after installation: {', '.join(still)}: install them with '{python} -m pip install'")
    return True


def _pip_install(python: str, reqs: List[str], status: Callable[[str], None]) -> None:
    """`<python> -m pip install reqs` (what slicer.util.pip_install runs for PythonSlicer), its output as progress."""
    status("installing " + ", ".join(reqs))
    proc = subprocess.Popen([python, "-m", "pip", "install", *reqs], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=python_environment(python), **hidden_window())
    last = ""
    for line in proc.stdout:
        if line.strip():
            last = line.strip()
            status(last[:200])
    if proc.wait() != 0:
        raise EngineError(f"pip could not install the engine's packages into {python} ({last[:200]}): see Slicer's log, fix the network or the Python, try again")
