"""A run's files appear together when it succeeds, and a failed or cancelled run leaves none.

Shared by :mod:`.runner` (the networks) and :mod:`.compare_runner` (two land-cover
maps); imports neither torch nor the engine. Every file of a run (the engine's
products and the plugin's report) is staged in one :class:`~core.files.Publication`
and committed at the very end; until then no final name is touched, so a cancel or a
failure leaves an earlier run's outputs exactly as they were.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from qgis.core import QgsProcessingException

from ..core.errors import Cancelled, ChangeDetectionError
from ..core.files import Publication
from ..core.io import terminate_cleanly
from .change_algorithm import RunCancelled


@contextmanager
def removed_on_failure(publication: Publication) -> Iterator[None]:
    """Discard every file staged in ``publication`` if the block does not finish (it commits at its end).

    A cancel becomes :class:`~.change_algorithm.RunCancelled`, any problem the user can
    fix a ``QgsProcessingException`` with the core's message; SIGTERM (qgis_process runs
    algorithms in its main thread) cleans up the same way.

    Raises:
        RunCancelled: the user cancelled.
        QgsProcessingException: the core refused or failed with a message for the user.
    """
    with terminate_cleanly(publication.discard):
        try:
            yield
        except Cancelled as error:
            publication.discard()
            raise RunCancelled(str(error)) from error
        except ChangeDetectionError as error:
            publication.discard()
            raise QgsProcessingException(str(error)) from error
        except BaseException:
            publication.discard()
            raise


def publish(publication: Publication, feedback: object) -> None:
    """Commit the run's files, unless the user cancelled after the last step that checks for it."""
    if getattr(feedback, "isCanceled", lambda: False)():
        raise Cancelled("cancelled by the user; no output was written")
    publication.commit()
