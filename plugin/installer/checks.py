"""Checks before and after an install: enough disk space, and an installed folder that is whole.

Before: torch is large (about 0.8 GB for the CPU build, 4.5 GB with NVIDIA's libraries on Linux),
so an install that would fill the drive is refused up front with the space it needs
(:func:`space_problem`) rather than failing half-way. After: pip's ``RECORD`` files list every
installed file with its size, so a truncated or half-deleted package (an interrupted copy, a full
disk, an over-eager virus scanner) is found without importing anything (:func:`check_folder`),
and the dialog offers a repair.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .layout import MANIFEST, POINTER, active_folder

#: Disk space an install needs (staging folder, pip's temporary copy and download cache),
#: in GB: torch 2.13 CPU unpacks to about 0.8 GB, the CUDA build and NVIDIA's libraries to
#: about 4.5 GB on Linux.
SPACE_NEEDED_GB = {"cpu": 2.0, "cuda": 8.0}


# --- disk space ----------------------------------------------------------------------------


def free_space_gb(folder: str | Path) -> float:
    """Free space on the drive of ``folder`` (or of its nearest existing parent)."""
    path = Path(folder).absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return shutil.disk_usage(path).free / 1e9


def space_problem(root: str | Path, variant: str) -> str | None:
    needed, free = SPACE_NEEDED_GB[variant], free_space_gb(root)
    if free >= needed:
        return None
    return (f"the {variant.upper()} build needs about {needed:.0f} GB free on the drive of {root}, "
            f"but only {free:.1f} GB are free: free some space and try again")


# --- what is there, what is broken ---------------------------------------------------------


@dataclass
class FolderCheck:
    """The private folder's state: which folder is active and which of its packages are damaged."""

    root: Path
    active: Path | None
    distributions: dict[str, str] = field(default_factory=dict)  # name -> version
    damaged: dict[str, list[str]] = field(default_factory=dict)  # name -> files missing or of the wrong size
    problem: str | None = None

    @property
    def broken(self) -> bool:
        return bool(self.damaged) or self.problem is not None

    def describe(self) -> str:
        if self.problem:
            return self.problem
        if self.active is None:
            return "nothing installed yet"
        if not self.damaged:
            return f"{len(self.distributions)} packages, intact"
        parts = []
        for name, files in sorted(self.damaged.items()):
            parts.append(f"{name} ({len(files)} file(s) missing or truncated, e.g. {files[0]})")
        return "damaged: " + "; ".join(parts) + ". Repair reinstalls them."


def check_folder(root: str | Path) -> FolderCheck:
    """Compare every file the active folder's ``*.dist-info/RECORD`` lists with the disk (presence and size).

    Hashing 1 GB of torch would take seconds; a size check finds truncated and missing files in a
    fraction of that, which is what an interrupted copy, a full disk or an over-eager virus scanner leaves.
    """
    root = Path(root)
    folder = active_folder(root)
    check = FolderCheck(root=root, active=folder)
    if folder is None:
        if (root / POINTER).exists():
            check.problem = f"the pointer file {root / POINTER} is unreadable or empty"
        return check
    if not folder.is_dir():
        check.problem = f"the active folder {folder} is missing"
        return check
    for record in sorted(folder.glob("*.dist-info/RECORD")):
        name, _, version = record.parent.name[: -len(".dist-info")].partition("-")
        check.distributions[name] = version
        bad = _record_problems(folder, record)
        if bad:
            check.damaged[name] = bad
    if not check.distributions and not _nothing_was_needed(folder):
        check.problem = f"the active folder {folder} holds no installed package"
    return check


def _nothing_was_needed(folder: Path) -> bool:
    """An install that found everything in QGIS's Python already leaves an empty folder with its manifest."""
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["installed"] == []
    except (OSError, ValueError, KeyError):
        return False


def _record_problems(folder: Path, record: Path) -> list[str]:
    bad = []
    with record.open(newline="", encoding="utf-8") as handle:
        for row in csv.reader(handle):
            if len(row) < 3 or not row[2]:
                continue  # RECORD itself and files pip does not size (e.g. .pyc)
            relative = row[0]
            path = (folder / relative)
            if ".." in Path(relative).parts:
                continue  # scripts placed outside the folder by --target
            try:
                size = path.stat().st_size
            except OSError:
                bad.append(relative)
                continue
            if size != int(row[2]):
                bad.append(relative)
    return bad
