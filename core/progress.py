"""The one progress protocol of the engine: a fraction, log lines, and a way to ask for a stop.

Every long step in core (the network walk, the products stage, the sieve, the
polygons) reports to a :class:`Progress`. Callers adapt their own UI to it once
(the plugin maps it onto QGIS's feedback); steps that are only part of the whole
report through a :class:`ProgressSpan`, which maps their 0..1 onto a share of the
parent's bar, so no step needs to know what comes before or after it.
"""

from __future__ import annotations


class Progress:
    """Receives progress and messages and tells the engine whether to stop.

    The default does nothing and never cancels. Subclass it and override what you need.
    """

    def set_progress(self, fraction: float) -> None:
        """Called with 0..1 as the work advances (at least once per batch of tiles or rows)."""

    def info(self, message: str) -> None:
        """A line for the run's log."""

    def is_cancelled(self) -> bool:
        """True once the user asked to stop; the step then raises :class:`~.errors.Cancelled`."""
        return False


class ProgressSpan(Progress):
    """A part of a parent's progress: 0..1 here is ``start .. start + share`` there.

    A span with ``share=0`` keeps the bar where it is and still passes on messages and
    the cancel question, e.g. for a clean-up step after the bar is full.
    """

    def __init__(self, parent: Progress | None, start: float = 0.0, share: float = 1.0) -> None:
        self.parent = parent or Progress()
        self.start = start
        self.share = share

    def set_progress(self, fraction: float) -> None:
        if self.share:
            self.parent.set_progress(self.start + self.share * min(1.0, max(0.0, fraction)))

    def info(self, message: str) -> None:
        self.parent.info(message)

    def is_cancelled(self) -> bool:
        return self.parent.is_cancelled()

    def span(self, start: float, share: float) -> ProgressSpan:
        """A part of this span, in this span's own 0..1."""
        return ProgressSpan(self.parent, self.start + self.share * start, self.share * share)
