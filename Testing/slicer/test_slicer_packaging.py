"""Extension packaging: every Python file of SlideSAM/ and SlideSAMLib/ is listed in CMake, metadata is complete."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = ROOT / "SlideSAM"
LIB_DIR = ROOT / "SlideSAMLib"


def cmake_set(text, name):
    match = re.search(r"set\(\s*" + name + r"\s+(.*?)\)", text, re.S)
    assert match, f"set({name} ...) not found"
    return [t for t in match.group(1).split() if not t.startswith("#")]


def unlisted_python_files(cmake_text):
    """Python files on disk that the module's CMakeLists does not install."""
    module_listed = {t.replace("${MODULE_NAME}", "SlideSAM") for t in cmake_set(cmake_text, "MODULE_PYTHON_SCRIPTS")}
    lib_listed = set(cmake_set(cmake_text, "SLIDESAMLIB_PYTHON_SCRIPTS"))
    assert "foreach(script ${SLIDESAMLIB_PYTHON_SCRIPTS})" in cmake_text
    on_disk_module = {p.relative_to(MODULE_DIR).as_posix() for p in MODULE_DIR.rglob("*.py") if "__pycache__" not in p.parts}
    on_disk_lib = {p.relative_to(LIB_DIR).as_posix() for p in LIB_DIR.rglob("*.py") if "__pycache__" not in p.parts}
    return sorted(on_disk_module - module_listed) + sorted("SlideSAMLib/" + p for p in on_disk_lib - lib_listed)


def test_cmake_lists_every_python_file():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    missing = unlisted_python_files(text)
    assert not missing, f"SlideSAM/CMakeLists.txt does not list: {missing} (a packaged extension would lack them)"
    for script in cmake_set(text, "SLIDESAMLIB_PYTHON_SCRIPTS"):
        assert (LIB_DIR / script).is_file(), f"CMake lists SlideSAMLib/{script}, which does not exist"


def test_the_check_catches_a_dropped_file():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    baseline = set(unlisted_python_files(text))
    assert set(unlisted_python_files(text.replace("  SlideSAMSlicer/geometry.py\n", ""))) - baseline == {"SlideSAMSlicer/geometry.py"}
    assert set(unlisted_python_files(text.replace("  session.py\n", ""))) - baseline == {"SlideSAMLib/session.py"}


def test_resources_are_listed_and_exist():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    listed = {t.replace("${MODULE_NAME}", "SlideSAM") for t in cmake_set(text, "MODULE_PYTHON_RESOURCES")}
    on_disk = {p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "Resources").rglob("*") if p.is_file()}
    assert listed == on_disk
    from PIL import Image

    assert Image.open(MODULE_DIR / "Resources" / "Icons" / "SlideSAM.png").size == (128, 128)
    assert "slicerMacroBuildScriptedModule(" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def test_extension_metadata():
    text = (ROOT / "CMakeLists.txt").read_text()
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert re.search(r"set\(" + key + r' "[^"]+"\)', text), f"{key} missing or empty"
    assert 'set(EXTENSION_CATEGORY "Segmentation")' in text and 'set(EXTENSION_DEPENDS "PyTorch")' in text
    assert "add_subdirectory(SlideSAM)" in text
    s4ext = dict(line.split(" ", 1) for line in (ROOT / "SlideSAM.s4ext").read_text().splitlines() if line and not line.startswith("#"))
    assert s4ext["category"] == "Segmentation" and s4ext["depends"] == "PyTorch"
    screenshot = re.search(r'EXTENSION_SCREENSHOTURLS "[^"]*/main/([^"]+)"', text).group(1)
    icon = re.search(r'EXTENSION_ICONURL "[^"]*/main/([^"]+)"', text).group(1)
    assert (ROOT / screenshot).is_file() and (ROOT / icon).is_file()
