"""Outputs of the training CLI that never replace a user's files unasked.

Single files (a model file) are refused when they exist unless ``--force`` is given.

Commands that write a whole folder (a dataset, predictions) write it beside its
final place under a hidden name and rename it at the end, so an interrupted run
never leaves a folder that looks finished. They refuse a destination that
already holds files: a user's files are never overwritten or mixed with ours.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from core.errors import InputError


def refuse_existing_file(path: Path, force: bool) -> None:
    """A file command refuses to replace an existing file unless ``--force`` was given."""
    if path.exists() and not force:
        raise InputError(f"{path} already exists; choose another --out or add --force to replace it")


def check_new_folder(out: str | os.PathLike[str]) -> Path:
    """``out`` as a Path, refusing an existing file or a non-empty folder."""
    out = Path(out)
    if out.is_file():
        raise InputError(f"{out} is a file; --out must name a new (or empty) folder")
    if out.is_dir() and any(out.iterdir()):
        raise InputError(f"{out} already holds files; choose a new --out folder (nothing is overwritten)")
    return out


@contextlib.contextmanager
def staged_folder(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it becomes ``out``, on failure it is removed."""
    out = check_new_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield staging
        if out.is_dir():
            out.rmdir()  # empty, checked above
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
