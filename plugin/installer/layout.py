"""Where the installer keeps things: the private folder, its entries, and the requirements it installs.

The private folder (:func:`default_root`, in the user's QGIS profile) holds

* ``active.txt``, the pointer naming the one install in use (:func:`active_folder` reads it,
  :func:`set_active` replaces it atomically, so a reader sees the old name or the new one);
* ``site-<date>-<id>/``, one complete install each (:func:`new_site`), with its manifest;
* temporary entries of an install in progress (the staging folder, pip's work files and
  temporary folder), all named by the project's one temporary-name scheme
  (:func:`~core.files.partial_path`), so that a leftover of a killed install is recognised
  (:func:`is_temporary`) and never put on ``sys.path``;
* ``last-install.log``, the whole log of the last install (:func:`last_log`).

Every other module of the installer asks this one for these names, so that the layout on disk
is decided in one place.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

try:
    from ...core.files import atomic_write_text, is_partial, partial_path
except ImportError:  # a source checkout runs this as the top-level package ``plugin`` (``python -m plugin.installer``)
    from core.files import atomic_write_text, is_partial, partial_path

#: The pins of the packages to install, the file ``make setup`` installs from too.
REQUIREMENTS_FILE = Path(__file__).parent.parent / "runtime-requirements.txt"

#: Folder (inside the QGIS profile folder) that holds the private packages.
FOLDER_NAME = "semantic_change_dependencies"
POINTER = "active.txt"
MANIFEST = "install.json"
LOG = "last-install.log"
#: How the folder of one complete install starts.
SITE_PREFIX = "site-"
#: How staging entries were named before temporary names came from :mod:`core.files`; a profile may still
#: hold a leftover of such an install.
LEGACY_STAGING_PREFIX = ".staging-"


def default_root(profile_folder: str | Path) -> Path:
    """The private folder for a QGIS profile folder (``QgsApplication.qgisSettingsDirPath()``)."""
    return Path(profile_folder) / FOLDER_NAME


def active_folder(root: str | Path) -> Path | None:
    """The folder the pointer file names, or None when nothing was installed (or the pointer is bad)."""
    root = Path(root)
    try:
        name = (root / POINTER).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    return root / name


def set_active(root: Path, folder: Path) -> None:
    """Make ``folder`` (inside ``root``) the active install: one atomic replace of the pointer file."""
    atomic_write_text(root / POINTER, folder.name + "\n")


def new_site(root: Path) -> Path:
    """The name of a new install's folder: ``site-<date>-<time>-<id>``, unique and in the order installs ran."""
    return root / f"{SITE_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def temporary(final: Path) -> Path:
    """A temporary name beside ``final`` (a staging folder, a work file): hidden, unique, never on ``sys.path``."""
    return partial_path(final)


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is an entry of an install in progress, or left over by a cancelled or crashed one."""
    return is_partial(path) or path.name.startswith(LEGACY_STAGING_PREFIX)


def is_site(path: Path) -> bool:
    """Whether ``path`` is the folder of a complete install (the active one or an earlier one)."""
    return path.name.startswith(SITE_PREFIX)


def last_log(root: str | Path) -> str:
    try:
        return (Path(root) / LOG).read_text(encoding="utf-8")
    except OSError:
        return "(no install has run yet)"


def write_log(root: Path, text: str) -> None:
    """Replace the log of the last install (atomically: a dialog may be reading it)."""
    atomic_write_text(root / LOG, text + "\n")
