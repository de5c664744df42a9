"""Exceptions raised by the engine.

Every message is one line that names the problem and the fix, so the CLI,
the Slicer module and the server can show it to a user as it is.
"""


class SlideSAMError(Exception):
    """Base class: a problem the user can fix, reported without a traceback."""


class InputError(SlideSAMError):
    """An image, a prompt or an option that cannot be used."""


class CheckpointError(SlideSAMError):
    """A model file that is missing, truncated or of an unknown kind."""


class Cancelled(SlideSAMError):
    """The caller asked the running work to stop."""
