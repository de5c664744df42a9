"""The module's .ui loads offscreen, every widget the code uses exists, every custom class is declared."""
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "SlideSAM" / "Resources" / "UI" / "SlideSAM.ui"
MODULE = ROOT / "SlideSAM" / "SlideSAM.py"


def ui_names_used_by_code():
    return set(re.findall(r"self\.ui\.(\w+)", MODULE.read_text()))


def widget_classes(tree):
    return {w.get("class") for w in tree.iter("widget")}


def test_every_custom_class_is_declared():
    tree = ET.parse(UI)
    declared = {c.findtext("class") for c in tree.iter("customwidget")}
    custom = {c for c in widget_classes(tree) if not c.startswith("Q")}
    assert custom, "the UI is expected to use MRML / CTK widgets"
    assert custom <= declared, f"undeclared custom widgets: {sorted(custom - declared)}"
    for c in tree.iter("customwidget"):  # each declared base resolves to Qt or another declared class
        base = c.findtext("extends")
        assert base.startswith("Q") or base in declared


def test_mrml_widgets_are_used():
    tree = ET.parse(UI)
    classes = {w.get("name"): w.get("class") for w in tree.iter("widget")}
    assert classes["inputVolumeSelector"] == "qMRMLNodeComboBox"
    assert classes["segmentationSelector"] == "qMRMLNodeComboBox"
    assert classes["segmentSelector"] == "qMRMLSegmentSelectorWidget"
    assert {classes[n] for n in ("boxPlaceWidget", "includePlaceWidget", "excludePlaceWidget")} == {"qSlicerMarkupsPlaceWidget"}
    assert classes["checkpointPathLineEdit"] == "ctkPathLineEdit"
    assert classes["progressBar"] == "QProgressBar"


def test_ui_loads_offscreen_and_has_every_name_the_code_uses():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    QtCore = pytest.importorskip("PySide6.QtCore")
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QApplication, QWidget

    app = QApplication.instance() or QApplication([])
    file = QtCore.QFile(str(UI))
    assert file.open(QtCore.QFile.ReadOnly)
    root = QUiLoader().load(file)
    file.close()
    assert root is not None and root.objectName() == "SlideSAM"
    used = ui_names_used_by_code()
    assert {"propagateButton", "cancelButton", "restartButton", "undoButton", "progressBar"} <= used
    missing = sorted(n for n in used if root.findChild(QWidget, n) is None)
    assert not missing, f"widgets used by SlideSAM.py but absent from the .ui: {missing}"
    directions = root.findChild(QWidget, "directionComboBox")
    assert [directions.itemText(i) for i in range(directions.count())] == ["both", "up", "down"]
    assert root.findChild(QWidget, "deviceComboBox").itemText(0) == "auto"
    del app


def test_prompt_help_and_checkpoint_filter_match_slicer():
    """A box is two clicks, not a drag; the checkpoint path takes folders too (a ctkPathLineEdit name filter such as
    '*.pth' makes its validator refuse any path without that extension, folders included)."""
    tree = ET.parse(UI)
    widgets = {w.get("name"): w for w in tree.iter("widget")}
    tips = " ".join(t.text or "" for w in widgets.values() for p in w.findall("property") if p.get("name") == "toolTip" for t in p.iter("string"))
    assert "drag" not in tips.lower() and "opposite corner" in widgets["boxPlaceWidget"].findtext("property/string")
    assert [p for p in widgets["checkpointPathLineEdit"].findall("property") if p.get("name") == "nameFilters"] == []
