"""Writing a file so that it is never seen half-written, with the permissions any new file gets.

Every text or binary output the project writes outside GDAL (styles, CSV matrices,
reports, checkpoints) goes through :func:`atomic_write`: the bytes go to a hidden
temporary file in the destination folder, which is flushed and then renamed over
the final name, so a reader sees either the old file or the whole new one, never a
fragment, and a failed write leaves nothing behind.

``tempfile.mkstemp`` creates its file with mode 0600 whatever the user's umask, so a
style or report written that way cannot be read by colleagues sharing the folder
while the GeoTIFF beside it (created by GDAL with ``0666 & ~umask``) can. The
temporary file here is created with ``os.open(..., 0o666)`` instead, so the umask
decides, exactly as for any file a program creates.

The project's temporary names come from here too (:func:`partial_path`, recognised
by :func:`is_partial`): hidden, unique, beside the final name (so the last step is a
rename on the same drive) and marked ``.partial``, so that no temporary file or
folder is ever taken for a finished one and a leftover of a killed process can be
found and removed. Nothing here imports more than the standard library: the
plugin's dependency installer uses it where numpy and torch are not installed yet.

The names of a raster's sidecars (:func:`aux_path_for`, :func:`qml_path_for`,
:func:`sidecars`) live here too, so every module that moves or removes a raster
moves or removes the same files.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

#: Mode a new file is created with before the umask applies (the POSIX default for data files).
NEW_FILE_MODE = 0o666
#: The mark at the end of every temporary name.
PARTIAL_SUFFIX = ".partial"


def partial_path(final: str | os.PathLike[str]) -> Path:
    """A fresh temporary name for ``final`` (a file or a folder): ``.<name>.<random>.partial`` beside it.

    Beside it, so that moving the finished result into place is a rename on the same
    drive; hidden and marked, so that nobody takes it for the finished result and
    :func:`is_partial` finds it when a killed process left it behind; random, so that
    two processes writing the same name never share a temporary one.
    """
    path = Path(final)
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{PARTIAL_SUFFIX}")


def is_partial(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a temporary name of :func:`partial_path` (a file or folder that never finished)."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(PARTIAL_SUFFIX)


def aux_path_for(raster_path: str | os.PathLike[str]) -> Path:
    """GDAL's PAM sidecar of a raster: ``<name>.aux.xml``, holding category names and the RAT."""
    path = Path(raster_path)
    return path.with_name(path.name + ".aux.xml")


def qml_path_for(raster_path: str | os.PathLike[str]) -> Path:
    """The style QGIS loads automatically for a raster: same name, ``.qml`` suffix."""
    return Path(raster_path).with_suffix(".qml")


def sidecars(raster_path: str | os.PathLike[str]) -> list[Path]:
    """Files that belong to a raster and must move, or go, with it."""
    return [aux_path_for(raster_path), qml_path_for(raster_path)]


def default_file_mode() -> int:
    """The permission bits a new file gets under the current umask (e.g. 0o644 under umask 022)."""
    # The umask can only be read by setting it; set it straight back.
    current = os.umask(0)
    os.umask(current)
    return NEW_FILE_MODE & ~current


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", *,
                 encoding: str | None = "utf-8", newline: str | None = "",
                 fsync: bool = False) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path``.

    Args:
        path: The final file; its folder must exist.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        encoding, newline: For text mode (UTF-8, no newline translation, so CSV
            writers control line ends).
        fsync: Flush to disk before the rename (for files expensive to lose, such as
            checkpoints).

    Yields:
        The open stream. If the ``with`` block raises, the temporary file is removed
        and ``path`` is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write opens files for writing only ('w' or 'wb'), not {mode!r}")
    final = Path(path)
    temporary = partial_path(final)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    descriptor = os.open(temporary, flags, NEW_FILE_MODE)
    try:
        text = mode == "w"
        with os.fdopen(descriptor, mode, encoding=encoding if text else None,
                       newline=newline if text else None) as stream:
            yield stream
            stream.flush()
            if fsync:
                os.fsync(stream.fileno())
        os.replace(temporary, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically; returns ``path``."""
    with atomic_write(path) as stream:
        stream.write(text)
    return Path(path)


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None], *,
                      fsync: bool = False) -> Path:
    """Let ``write`` fill a binary stream that atomically becomes ``path``; returns ``path``."""
    with atomic_write(path, "wb", fsync=fsync) as stream:
        write(stream)
    return Path(path)


# --- publishing the files of one run together -------------------------------------------------------

def staged_name(final: str | os.PathLike[str]) -> Path:
    """A hidden name beside ``final`` that never looks like a finished output (its suffix is kept for GDAL)."""
    path = Path(final)
    return path.with_name(f".{path.stem}.partial-{secrets.token_hex(4)}{path.suffix}")


@dataclass(frozen=True)
class _Staged:
    temporary: Path
    final: Path
    #: Files that belong to ``final`` and must go when it is replaced (stale sidecars the new file lacks).
    replaces: tuple[Path, ...] = ()


class Publication:
    """The files of one run, written complete under hidden names and moved into place together, or not at all.

    A run writes several products (rasters with their sidecars, the transitions CSV,
    polygons, the report). Each is staged: written whole under a hidden name beside
    its final name (:func:`staged_name`) and registered with :meth:`stage`. Nothing
    under a final name changes until :meth:`commit`, so a cancel, an error or a
    signal at any point before it leaves every final name as it was, an earlier
    run's outputs included; :meth:`discard` then removes what was staged.

    :meth:`commit` first renames every file it will replace (and every stale
    companion, such as a legend the new raster lacks) to a hidden backup name, then
    renames every staged file to its final name, in the order staged (a raster's
    sidecars before the raster, so a reader never finds the raster without its
    legend). Renames within one folder do not fail for want of space; if one fails
    anyway (or the process is interrupted), the files already placed are removed and
    the backups renamed back, so the folder is as it was. Only then are the backups
    deleted. See docs/output-safety.md.
    """

    def __init__(self) -> None:
        self._staged: list[_Staged] = []
        self.committed = False

    def stage(self, temporary: str | os.PathLike[str], final: str | os.PathLike[str], *,
              replaces: Iterable[str | os.PathLike[str]] = ()) -> None:
        """Register the complete file ``temporary`` to become ``final`` at :meth:`commit`.

        Args:
            temporary: The file, written whole (usually at :func:`staged_name` of ``final``).
            final: Where it goes.
            replaces: Further files removed (after a backup) at the commit: parts of an earlier
                ``final`` that the new one does not have.
        """
        if self.committed:
            raise RuntimeError("this run's files were already published")
        self._staged.append(_Staged(Path(temporary), Path(final), tuple(Path(p) for p in replaces)))

    def where(self, final: str | os.PathLike[str]) -> Path:
        """Where the product bound for ``final`` is now: its staged file before the commit, else ``final``."""
        wanted = Path(final)
        if not self.committed:
            for staged in self._staged:
                if staged.final == wanted:
                    return staged.temporary
        return wanted

    @property
    def finals(self) -> list[Path]:
        """The final names of the staged files, in order."""
        return [staged.final for staged in self._staged]

    def commit(self) -> None:
        """Move every staged file into place; on any failure leave every final name as it was."""
        if self.committed:
            raise RuntimeError("this run's files were already published")
        backups: list[tuple[Path, Path]] = []
        placed: list[_Staged] = []
        try:
            for final in dict.fromkeys(p for staged in self._staged for p in (staged.final, *staged.replaces)):
                if os.path.lexists(final):
                    backup = final.with_name(f".{final.name}.previous-{secrets.token_hex(4)}")
                    os.replace(final, backup)
                    backups.append((final, backup))
            for staged in self._staged:
                os.replace(staged.temporary, staged.final)
                placed.append(staged)
        except BaseException:
            for staged in reversed(placed):
                with contextlib.suppress(OSError):
                    os.replace(staged.final, staged.temporary)
            for final, backup in reversed(backups):
                with contextlib.suppress(OSError):
                    os.replace(backup, final)
            self.discard()
            raise
        self.committed = True
        for _, backup in backups:
            with contextlib.suppress(OSError):
                os.unlink(backup)

    def discard(self) -> None:
        """Remove every staged file (after an error or a cancel); the final names are left alone."""
        if self.committed:
            return
        for staged in self._staged:
            with contextlib.suppress(OSError):
                staged.temporary.unlink()
