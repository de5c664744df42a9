"""Minimal stand-in for Slicer's ScriptedLoadableModule (tests only, never shipped).

slicer-core has MRML and slicer.util but not the scripted-module base classes; these
carry just what SlideSAM uses: module metadata on `parent`, the parameter node of a logic,
the widget's panel layout and resource path, and a TestCase with delayDisplay.
"""
import os as _os
import unittest as _unittest


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent
        self.moduleName = self.__class__.__name__


class ScriptedLoadableModuleLogic:
    """As Slicer v5.10.0 Base/Python/slicer/ScriptedLoadableModule.py:296-372 (singleton parameter nodes only)."""

    def __init__(self, parent=None):
        self.moduleName = self.__class__.__name__[: -len("Logic")] if self.__class__.__name__.endswith("Logic") else self.__class__.__name__
        self.isSingletonParameterNode = True

    def getParameterNode(self):
        import slicer

        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is not None:
            if node.GetAttribute("ModuleName") != self.moduleName:
                node.SetAttribute("ModuleName", self.moduleName)
            return node
        node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)
        node.SetSingletonTag(self.moduleName)
        node.SetAttribute("ModuleName", self.moduleName)
        return slicer.mrmlScene.AddNode(node)


class _Layout:
    """The module panel's layout: records what the widget adds."""

    def __init__(self):
        self.widgets = []

    def addWidget(self, widget):
        self.widgets.append(widget)

    def addStretch(self, stretch=0):
        pass


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent
        self.moduleName = self.__class__.__name__[: -len("Widget")]
        self.layout = _Layout()

    def resourcePath(self, filename):
        import importlib

        module = importlib.import_module(self.moduleName)
        return _os.path.join(_os.path.dirname(module.__file__), "Resources", filename)

    def setup(self):
        pass


class ScriptedLoadableModuleTest(_unittest.TestCase):
    def delayDisplay(self, message, msec=0):
        print(message)
