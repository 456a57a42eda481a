"""What a run wrote is removed again when a later step fails or is cancelled.

Shared by :mod:`.runner` (the networks) and :mod:`.compare_runner` (two land-cover
maps); imports neither torch nor the engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from qgis.core import QgsProcessingException

from ..core.errors import Cancelled, ChangeDetectionError
from ..core.files import sidecars
from ..core.io import terminate_cleanly
from ..core.pathguard import vector_sidecars
from .change_algorithm import RunCancelled


@contextmanager
def removed_on_failure(written: list[Path]) -> Iterator[None]:
    """Delete every file in ``written`` (as the run appends to it) if the block does not finish.

    A cancel becomes :class:`~.change_algorithm.RunCancelled`, any problem the user can
    fix a ``QgsProcessingException`` with the core's message; SIGTERM (qgis_process runs
    algorithms in its main thread) cleans up the same way.

    Raises:
        RunCancelled: the user cancelled.
        QgsProcessingException: the core refused or failed with a message for the user.
    """
    with terminate_cleanly(lambda: remove_outputs(written)):
        try:
            yield
        except Cancelled as error:
            remove_outputs(written)
            raise RunCancelled(str(error)) from error
        except ChangeDetectionError as error:
            remove_outputs(written)
            raise QgsProcessingException(str(error)) from error
        except BaseException:
            remove_outputs(written)
            raise


def remove_outputs(paths: list[Path]) -> None:
    """Delete outputs with their legend sidecars (or the other files of a Shapefile)."""
    for path in paths:
        for file in (path, *sidecars(path), *vector_sidecars(path)):
            file.unlink(missing_ok=True)
