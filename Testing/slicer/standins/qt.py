"""Stand-in for PythonQt's `qt` (tests only): the few non-widget classes SlideSAM's widget uses.

The logic never imports qt. Timers do not tick by themselves: a test calls `fire()` to deliver a timeout.
"""
import inspect
import traceback

slot_exceptions = []  # what slots raised: PythonQt prints it to the console and the signal's emitter goes on


def _accepted(slot, args):
    """PythonQt passes a slot only as many signal arguments as it takes (Slicer's module template relies on it)."""
    try:
        params = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return args
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return args
    return args[: sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)]


class _Signals:
    def __init__(self):
        self._slots = {}

    def connect(self, signal, slot):
        self._slots.setdefault(signal, []).append(slot)

    def emit(self, signal, *args):
        for slot in list(self._slots.get(signal, [])):
            try:
                slot(*_accepted(slot, args))
            except Exception as exc:  # noqa: BLE001 - as PythonQt does: report, do not unwind into Qt
                traceback.print_exc()
                slot_exceptions.append(exc)


class QTimer(_Signals):
    def __init__(self):
        super().__init__()
        self.interval, self.active = 0, False

    def setInterval(self, msec):
        self.interval = msec

    def start(self):
        self.active = True

    def stop(self):
        self.active = False

    def isActive(self):
        return self.active

    def fire(self):
        if self.active:
            self.emit("timeout()")


class QKeySequence:
    def __init__(self, text):
        self.text = text


class QShortcut(_Signals):
    """Qt delivers a shortcut's key press only while it is enabled and its parent widget exists (deleteLater ends it)."""

    def __init__(self, keySequence, parent=None):
        super().__init__()
        self.key, self.parent, self.enabled, self.deleted = keySequence, parent, True, False

    def setParent(self, parent):
        self.parent = parent

    def setEnabled(self, enabled):
        self.enabled = bool(enabled)

    def isEnabled(self):
        return self.enabled

    def deleteLater(self):
        self.deleted = True

    def press(self):
        """The user presses the key sequence."""
        if self.enabled and not self.deleted and self.parent is not None:
            self.emit("activated()")


class Qt:
    WaitCursor = 3


class QEventLoop:
    ExcludeUserInputEvents = 0x01  # QEventLoop::ProcessEventsFlag


class QProcessEnvironment:
    """What `slicer.app.startupEnvironment()` returns (qSlicerCoreApplication.h:155): `keys()` and `value(name)`."""

    def __init__(self, variables):
        self._variables = dict(variables)

    def keys(self):
        return list(self._variables)

    def value(self, name, defaultValue=""):
        return self._variables.get(name, defaultValue)


class QSettings:
    """`slicer.app.settings()` (qSlicerCoreApplication.h:409): a key -> value store; value() of a missing key is None."""

    def __init__(self):
        self._values = {}

    def value(self, key, defaultValue=None):
        return self._values.get(key, defaultValue)

    def setValue(self, key, value):
        self._values[key] = value

    def remove(self, key):
        self._values.pop(key, None)

    def contains(self, key):
        return key in self._values
