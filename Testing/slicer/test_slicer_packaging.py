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


# The Extensions Index entry (Slicer 5.8+ catalogs extensions as one JSON file each). The schema is Slicer's own
# Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json (identical at v5.8.1 and v5.10.0), copied into Testing/slicer/data.
SCHEMA = Path(__file__).resolve().parent / "data" / "slicer-extension-catalog-entry-schema-v1.0.1.json"
# Utilities/Templates/Extensions/Default/CMakeLists.txt of Slicer v5.10.0 (v5.8.1's template still says 3.16.3...3.19.7).
TEMPLATE_CMAKE_RANGE = "3.20.6...3.22.6"


def schema_errors(entry, schema):
    """What the flat catalog-entry schema rejects in `entry` (required keys, no extra keys, types, enum, range)."""
    types = {"string": str, "array": list, "boolean": bool, "integer": int, "object": dict}
    errors = [f"missing {key}" for key in schema["required"] if key not in entry]
    for key, value in entry.items():
        spec = schema["properties"].get(key)
        if spec is None:
            errors.append(f"unknown key {key}")
            continue
        if not isinstance(value, types[spec["type"]]) or (spec["type"] == "integer" and isinstance(value, bool)):
            errors.append(f"{key} is not a {spec['type']}")
            continue
        if "enum" in spec and value not in spec["enum"]:
            errors.append(f"{key} not in {spec['enum']}")
        if spec["type"] == "integer" and not spec.get("minimum", value) <= value <= spec.get("maximum", value):
            errors.append(f"{key} out of range")
        if spec["type"] == "array" and not all(isinstance(v, types[spec["items"]["type"]]) for v in value):
            errors.append(f"{key} items are not {spec['items']['type']}")
    return errors


def cmake_value(text, name):
    return re.search(r"set\(" + name + r' "?([^")]*)"?\)', text).group(1).strip()


def test_extensions_index_entry_follows_slicers_schema_and_the_cmake_metadata():
    import json

    schema = json.loads(SCHEMA.read_text())
    entry = json.loads((ROOT / "SlideSAM.json").read_text())
    assert schema_errors(entry, schema) == []
    assert entry["$schema"].split("/")[-1].rstrip("#") == SCHEMA.name  # a schema Slicer 5.8 and 5.10 ship
    cmake = (ROOT / "CMakeLists.txt").read_text()
    s4ext = dict(line.split(" ", 1) for line in (ROOT / "SlideSAM.s4ext").read_text().splitlines() if line and not line.startswith("#"))
    assert entry["category"] == cmake_value(cmake, "EXTENSION_CATEGORY") == s4ext["category"]
    assert entry["build_dependencies"] == cmake_value(cmake, "EXTENSION_DEPENDS").split() == s4ext["depends"].split()
    assert entry["build_subdirectory"] == cmake_value(cmake, "EXTENSION_BUILD_SUBDIRECTORY") == s4ext["build_subdirectory"]
    assert entry["scm_url"] == s4ext["scmurl"] and entry["scm_revision"] == s4ext["scmrevision"]


def test_the_schema_check_catches_a_bad_entry():
    import json

    schema = json.loads(SCHEMA.read_text())
    entry = json.loads((ROOT / "SlideSAM.json").read_text())
    assert schema_errors({k: v for k, v in entry.items() if k != "scm_url"}, schema) == ["missing scm_url"]
    assert schema_errors({**entry, "homepage": "x"}, schema) == ["unknown key homepage"]  # the index takes no metadata
    assert schema_errors({**entry, "tier": 9}, schema) == ["tier out of range"]
    assert schema_errors({**entry, "build_dependencies": "PyTorch"}, schema) == ["build_dependencies is not a array"]


def test_cmake_minimum_range_is_the_extension_templates():
    for path in (ROOT / "CMakeLists.txt",):
        match = re.search(r"cmake_minimum_required\(VERSION (\S+) FATAL_ERROR\)", path.read_text())
        assert match and match.group(1) == TEMPLATE_CMAKE_RANGE, path


def test_the_engine_package_list_is_packaged_where_dependencies_reads_it():
    """dependencies.py reads pyproject.toml from the folder holding SlideSAMLib: the build must put a copy there."""
    from SlideSAMSlicer import dependencies
    from SlideSAMLib.engine_process import LIB_PARENT

    assert dependencies.PYPROJECT == Path(LIB_PARENT) / "pyproject.toml"
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    # SlideSAMLib lands in <build>/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/SlideSAMLib (the scripts' DESTINATION_DIR in
    # Slicer's slicerMacroBuildScriptedModule); pyproject.toml must be copied to that folder's root.
    copy = re.search(r"configure_file\(\s*(\S+)\s+(\S+)\s+COPYONLY\s*\)", text.split("set(MODULE_PYTHON_RESOURCES")[0].split("endforeach()")[-1])
    assert copy, "SlideSAM/CMakeLists.txt does not copy pyproject.toml beside SlideSAMLib"
    assert copy.group(1) == "${CMAKE_CURRENT_SOURCE_DIR}/../pyproject.toml"
    assert copy.group(2) == "${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/pyproject.toml"
    assert (MODULE_DIR / ".." / "pyproject.toml").resolve().is_file()
