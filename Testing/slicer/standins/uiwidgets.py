"""Stand-ins for the Qt / CTK / qMRML widgets of SlideSAM.ui (tests only).

`load_ui(path)` reads the real .ui file and gives every named widget a small object with the PythonQt
surface the module uses: properties that emit their Qt signal when they change (as Qt does, so the
widget's guard against feedback loops is exercised), `connect(signal, slot)`, and the node / segment
selector calls. Nothing here decides what the module does; it only carries values and signals.
"""
import xml.etree.ElementTree as ET

from qt import _Signals

# property -> the signal Qt emits when it changes
PROPERTY_SIGNALS = {
    "checked": "toggled(bool)",
    "value": "valueChanged(int)",
    "currentIndex": "currentIndexChanged(int)",
    "text": "textChanged(QString)",
    "currentPath": "currentPathChanged(QString)",
}

RANGES = {"QSpinBox": (0, 99), "QProgressBar": (0, 100)}  # Qt's defaults, unless the .ui sets them


class Widget(_Signals):
    def __init__(self, name, className):
        object.__setattr__(self, "_ready", False)
        super().__init__()
        self.name, self.className = name, className
        self.minimum, self.maximum = RANGES.get(className, (-2**31, 2**31 - 1))
        self.enabled, self.checked, self.value, self.text, self.currentPath = True, False, 0, "", ""
        self.scene = None
        object.__setattr__(self, "_ready", True)

    def __setattr__(self, key, value):
        if key == "value":
            value = max(self.minimum, min(self.maximum, int(value)))  # as QSpinBox / QProgressBar keep to their range
        changed = self._ready and key in PROPERTY_SIGNALS and getattr(self, key, None) != value
        object.__setattr__(self, key, value)
        if changed:
            self.emit(PROPERTY_SIGNALS[key], value)

    def setMRMLScene(self, scene):
        self.scene = scene

    def click(self):
        if self.enabled:
            self.emit("clicked(bool)", False)


class ComboBox(Widget):
    def __init__(self, name, className, items):
        super().__init__(name, className)
        self.items = list(items)
        self.currentIndex = 0 if self.items else -1

    @property
    def currentText(self):
        return self.items[self.currentIndex] if 0 <= self.currentIndex < len(self.items) else ""

    def findText(self, text):
        return self.items.index(text) if text in self.items else -1


class NodeComboBox(Widget):
    """qMRMLNodeComboBox: holds a node of the scene."""

    def __init__(self, name, className):
        super().__init__(name, className)
        self._node = None

    def currentNode(self):
        return self._node

    @property
    def currentNodeID(self):
        return self._node.GetID() if self._node is not None else None

    def setCurrentNode(self, node):
        if node is not self._node:
            self._node = node
            self.emit("currentNodeChanged(vtkMRMLNode*)", node)


class SegmentSelector(Widget):
    """qMRMLSegmentSelectorWidget: a segmentation node and one of its segment IDs."""

    def __init__(self, name, className):
        super().__init__(name, className)
        self._node, self._segmentId = None, None
        self.segmentationNodeSelectorVisible = True

    def setCurrentNode(self, node):
        self._node = node
        if node is None or self._segmentId and node.GetSegmentation().GetSegment(self._segmentId) is None:
            self.setCurrentSegmentID(None)

    def currentSegmentID(self):
        return self._segmentId

    def setCurrentSegmentID(self, segmentId):
        if segmentId != self._segmentId:
            self._segmentId = segmentId
            self.emit("currentSegmentChanged(QString)", segmentId or "")


class PlaceWidget(Widget):
    """qSlicerMarkupsPlaceWidget: which markups node a click places into, and whether place mode is on."""

    def __init__(self, name, className):
        super().__init__(name, className)
        self._node, self.placeModeEnabled, self.placeMultipleMarkups = None, False, None

    def setCurrentNode(self, node):
        self._node = node

    def currentNode(self):
        return self._node

    def setPlaceModeEnabled(self, enabled):
        self.placeModeEnabled = bool(enabled)


CLASSES = {"qMRMLNodeComboBox": NodeComboBox, "qMRMLSegmentSelectorWidget": SegmentSelector, "qSlicerMarkupsPlaceWidget": PlaceWidget}


def load_ui(path):
    """(root widget, {name: widget}) for every named widget of the .ui file (layouts are not widgets)."""
    widgets = {}
    for element in ET.parse(path).iter("widget"):
        name, className = element.get("name"), element.get("class")
        if className in ("QComboBox",):
            items = [item.findtext("property/string") for item in element.findall("item")]
            widget = ComboBox(name, className, items)
        else:
            widget = CLASSES.get(className, Widget)(name, className)
        for prop in element.findall("property"):
            number = prop.findtext("number")
            if number is not None and prop.get("name") in ("minimum", "maximum"):
                object.__setattr__(widget, prop.get("name"), int(number))
        widgets[name] = widget
    root = ET.parse(path).getroot().find("widget").get("name")
    return widgets[root], widgets
