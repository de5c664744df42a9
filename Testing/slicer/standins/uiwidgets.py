"""Stand-ins for the Qt / CTK / qMRML widgets of SlideSAM.ui (tests only).

`load_ui(path)` reads the real .ui file and gives every named widget a small object with the PythonQt
surface the module uses: properties that emit their Qt signal when they change (as Qt does, so the
widget's guard against feedback loops is exercised), `connect(signal, slot)`, and the node / segment
selector calls. Nothing here decides what the module does; it only carries values and signals.
"""
import re
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
    def currentNodeID(self):  # a QString: "" without a node (qMRMLNodeComboBox.cxx:632)
        return self._node.GetID() if self._node is not None else ""

    def setCurrentNode(self, node):
        if node is not self._node:
            self._node = node
            self.emit("currentNodeChanged(vtkMRMLNode*)", node)


class SegmentSelector(Widget):
    """qMRMLSegmentSelectorWidget in single selection, as Slicer v5.10.0 qMRMLSegmentSelectorWidget.cxx does it:
    - its segment list is filled again when the node changes and on the node's SegmentAdded / SegmentRemoved /
      SegmentModified events (populateSegmentCombobox, :170-268): the current segment is kept if it is still there (or
      None while noneEnabled), otherwise the *first* segment is selected and currentSegmentChanged emitted; a node
      without segments empties the list and leaves the current ID as it was;
    - setCurrentSegmentID (:380): "" with noneEnabled selects None; an ID not in the list changes nothing;
    - currentSegmentChanged(QString) is emitted only when the selected entry changes (QComboBox), "" for None."""

    EVENTS = (62102, 62103, 62104)  # vtkSegmentation::SegmentAdded, SegmentRemoved, SegmentModified (slicer-core's values)

    def __init__(self, name, className):
        super().__init__(name, className)
        self._node, self._segmentId, self._items, self._index, self._tags = None, "", [], -1, []
        self.segmentationNodeSelectorVisible, self.noneEnabled = True, False

    def currentNode(self):
        return self._node

    def setCurrentNode(self, node):
        if node is self._node:
            return
        for tag in self._tags:
            self._node.RemoveObserver(tag)
        self._node, self._tags = node, [node.AddObserver(e, self._populate) for e in self.EVENTS] if node is not None else []
        self._populate()

    def _populate(self, *args):
        self._items, self._index = [], -1
        ids = list(self._node.GetSegmentation().GetSegmentIDs()) if self._node is not None else []
        if not ids:
            return
        self._items = ([""] if self.noneEnabled else []) + ids  # "" is the None entry
        if (self.noneEnabled and not self._segmentId) or self._segmentId in ids:
            self._index = self._items.index(self._segmentId)  # restored with signals blocked
        else:
            self._select(1 if self.noneEnabled else 0)  # the first segment

    def _select(self, index):
        if index == self._index or not 0 <= index < len(self._items):
            return
        self._index, self._segmentId = index, self._items[index]
        self.emit("currentSegmentChanged(QString)", self._segmentId)

    def currentSegmentID(self):
        return self._segmentId

    def setCurrentSegmentID(self, segmentId):
        if not segmentId and self.noneEnabled:
            self._select(0)
        elif segmentId and segmentId in self._items:
            self._select(self._items.index(segmentId))


class PlaceWidget(Widget):
    """qSlicerMarkupsPlaceWidget, as its source does it (Slicer v5.10.0 qSlicerMarkupsPlaceWidget.cxx): place mode makes
    the current node the markups logic's active list, sets the interaction node's persistence by `placeMultipleMarkups`
    and switches it to Place; `placeModeEnabled` reads that state back from MRML."""

    # enum PlaceMultipleMarkupsType, in the header's order
    ShowPlaceMultipleMarkupsOption, ForcePlaceSingleMarkup, ForcePlaceMultipleMarkups = range(3)

    def __init__(self, name, className):
        super().__init__(name, className)
        self._node, self.placeMultipleMarkups = None, self.ShowPlaceMultipleMarkupsOption
        self._selection = self._interaction = None

    def setMRMLScene(self, scene):
        super().setMRMLScene(scene)
        self._selection = scene.GetNodeByID("vtkMRMLSelectionNodeSingleton") if scene else None
        self._interaction = scene.GetNodeByID("vtkMRMLInteractionNodeSingleton") if scene else None

    def setCurrentNode(self, node):
        self._node = node

    def currentNode(self):
        return self._node

    @property
    def currentNodeActive(self):  # a Q_PROPERTY (qSlicerMarkupsPlaceWidget.h): PythonQt reads it as an attribute, not a call
        return (self._node is not None and self._selection is not None and self._selection.GetActivePlaceNodeID() == self._node.GetID()
                and self._selection.GetActivePlaceNodeClassName() == self._node.GetClassName())

    @property
    def placeModeEnabled(self):
        return self.currentNodeActive and self._interaction.GetCurrentInteractionMode() == self._interaction.Place

    def setPlaceModeEnabled(self, enabled):
        import slicer

        if self._node is None or self._interaction is None:
            return
        if not enabled:
            self._interaction.SetCurrentInteractionMode(self._interaction.ViewTransform)
            return
        if not self.currentNodeActive:
            slicer.modules.markups.logic().SetActiveList(self._node)
        if self.placeMultipleMarkups == self.ForcePlaceSingleMarkup:
            self._interaction.SetPlaceModePersistence(False)
        elif self.placeMultipleMarkups == self.ForcePlaceMultipleMarkups:
            self._interaction.SetPlaceModePersistence(True)
        self._interaction.SetCurrentInteractionMode(self._interaction.Place)


def ctk_name_filters_pattern(name_filters):
    """ctk::nameFiltersToRegularExpression (CTK ctkUtils.cpp, the revision Slicer 5.10 builds): the regular expression
    the path line edit's validator requires a whole path to match; no extension filters accept any path."""
    parts = []
    for name_filter in name_filters:
        match = re.match(r"^(.*)\(([a-zA-Z0-9_.*? +;#\-\[\]@\{\}/!<>$%&=^~:|]*)\)$", name_filter)
        if match:
            extensions = match.group(2).split()
        else:
            extensions = [name_filter] if re.match(r"^[\w\s.*_~$\[\]]+$", name_filter) else []
        for extension in extensions:
            found = re.search(r"\*\.(\w+)", extension)
            if found:
                parts.append(r".*\." + found.group(1) + "?$")
    return "(" + "|".join(parts) + ")" if parts else ".+"


class PathLineEdit(Widget):
    """ctkPathLineEdit: a QRegularExpressionValidator built from `nameFilters` guards the text; on each text change
    currentPathChanged is emitted only for acceptable input, and validInputChanged(bool) when acceptability changes
    (ctkPathLineEdit::updateHasValidInput, CTK ctkPathLineEdit.cpp:730-746): clearing the field is not acceptable input
    (the pattern without filters is '.+'), so it emits validInputChanged(False) and no currentPathChanged."""

    def __init__(self, name, className, nameFilters=()):
        super().__init__(name, className)
        object.__setattr__(self, "nameFilters", list(nameFilters))
        object.__setattr__(self, "_valid", False)  # HasValidInput of the empty text

    def acceptable(self, path):
        return re.fullmatch(ctk_name_filters_pattern(self.nameFilters), path) is not None

    def __setattr__(self, key, value):
        if key != "currentPath":
            return super().__setattr__(key, value)
        changed = self._ready and value != self.currentPath
        object.__setattr__(self, key, value)
        if not changed:
            return
        valid, was = self.acceptable(value), self._valid
        object.__setattr__(self, "_valid", valid)
        if valid:
            self.emit("currentPathChanged(QString)", value)
        if valid != was:
            self.emit("validInputChanged(bool)", valid)


CLASSES = {"qMRMLNodeComboBox": NodeComboBox, "qMRMLSegmentSelectorWidget": SegmentSelector, "qSlicerMarkupsPlaceWidget": PlaceWidget}


def load_ui(path):
    """(root widget, {name: widget}) for every named widget of the .ui file (layouts are not widgets)."""
    widgets = {}
    for element in ET.parse(path).iter("widget"):
        name, className = element.get("name"), element.get("class")
        if className in ("QComboBox",):
            items = [item.findtext("property/string") for item in element.findall("item")]
            widget = ComboBox(name, className, items)
        elif className == "ctkPathLineEdit":
            filters = [s.text for prop in element.findall("property") if prop.get("name") == "nameFilters" for s in prop.iter("string")]
            widget = PathLineEdit(name, className, filters)
        else:
            widget = CLASSES.get(className, Widget)(name, className)
        for prop in element.findall("property"):
            number = prop.findtext("number")
            if number is not None and prop.get("name") in ("minimum", "maximum"):
                object.__setattr__(widget, prop.get("name"), int(number))
            if prop.get("name") in ("checked", "noneEnabled") and prop.findtext("bool") is not None:
                object.__setattr__(widget, prop.get("name"), prop.findtext("bool") == "true")
        widgets[name] = widget
    root = ET.parse(path).getroot().find("widget").get("name")
    return widgets[root], widgets
