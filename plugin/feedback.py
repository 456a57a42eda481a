"""The engine's progress protocol on a QGIS feedback: the one adapter every algorithm uses."""

from __future__ import annotations

from qgis.core import QgsProcessingFeedback

from ..core.progress import Progress


class FeedbackProgress(Progress):
    """Progress, log lines and cancel of :mod:`core` on a ``QgsProcessingFeedback``."""

    def __init__(self, feedback: QgsProcessingFeedback) -> None:
        self.feedback = feedback

    def set_progress(self, fraction: float) -> None:
        self.feedback.setProgress(100.0 * min(1.0, max(0.0, fraction)))

    def info(self, message: str) -> None:
        self.feedback.pushInfo(message)

    def is_cancelled(self) -> bool:
        return self.feedback.isCanceled()
