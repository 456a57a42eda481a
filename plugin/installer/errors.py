"""The installer's two errors, in a module of their own because every step raises them.

The dialog shows an :class:`InstallError`'s message as it is and the command line prints it, so
each message says what went wrong and what to do; a :class:`CancelledError` is the user's own
choice and is reported as such, never as a failure.
"""

from __future__ import annotations


class InstallError(RuntimeError):
    """An install that cannot go ahead or did not succeed; the message says what to do."""


class CancelledError(InstallError):
    """The user stopped the install; the previous state is untouched."""
