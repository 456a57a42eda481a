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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
