"""Errors a user can act on.

Every problem with the user's input, files or options is raised as a subclass of
:class:`ChangeDetectionError` whose message says what is wrong and how to fix it.
The plugin turns exactly these into ``QgsProcessingException``; anything else is a
bug and keeps its traceback.
"""


class ChangeDetectionError(Exception):
    """Base class of the errors the user can fix."""


class InputError(ChangeDetectionError):
    """A raster, band, option or output location that cannot be used."""


class CheckpointError(ChangeDetectionError):
    """A model file that is missing, damaged, foreign, tampered with or inconsistent."""


class Cancelled(ChangeDetectionError):  # noqa: N818 - reads as "raise Cancelled(...)"
    """The user asked to stop; nothing finished-looking was written."""
