"""Putting the active install on ``sys.path`` when the plugin loads, and removing what nothing uses any more.

This runs in QGIS's own process, first thing in ``classFactory``, before anything can import
torch; so it imports nothing heavy and never fails the plugin's start (:func:`activate`).
Removing a folder is the delicate part: a QGIS session that has imported torch from a folder
keeps using its files until it restarts (and Windows keeps them locked), and another QGIS window
on the same profile may be installing right now, so :func:`remove_stale` leaves both alone.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import sys
import time
from pathlib import Path

from .layout import active_folder, is_site, is_temporary

#: At plugin load, staging folders younger than this are left alone (an install may be running in another
#: QGIS window on the same profile); an install started by the user removes every leftover.
STAGING_KEPT_S = 12 * 3600


def activate(root: str | Path) -> Path | None:
    """Put the active private folder first on ``sys.path`` (once); called when the plugin loads.

    The folder goes in front of QGIS's own site-packages so that a torch installed here
    wins over an old or broken one elsewhere; that is safe because an install never puts
    into it a package QGIS's Python already has in a usable version, and never numpy. It
    is added as a plain path entry, not with ``site.addsitedir``, so no ``.pth`` file in
    it runs. Folders of earlier installs are taken off ``sys.path``.

    Returns:
        The folder now on ``sys.path``, or None when there is none.
    """
    root = Path(root)
    folder = active_folder(root)
    stale = [entry for entry in sys.path if _is_inside(entry, root) and (folder is None or Path(entry) != folder)]
    for entry in stale:
        sys.path.remove(entry)
    with contextlib.suppress(OSError):
        remove_stale(root, staging_age_s=STAGING_KEPT_S)  # at start-up nothing is imported from them yet
    if folder is None or not folder.is_dir():
        return None
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    return folder


def in_use(folder: Path) -> bool:
    """Whether this process has imported a module from ``folder`` (its files must then stay until QGIS restarts)."""
    prefix = os.path.normcase(str(folder)) + os.sep
    return any(os.path.normcase(str(getattr(m, "__file__", None) or "")).startswith(prefix)
               for m in list(sys.modules.values()) if m is not None)


def remove_stale(root: Path, staging_age_s: float = 0) -> None:
    """Remove staging folders of cancelled or crashed installs and earlier installs nothing uses any more.

    A folder that this process imported from stays (a QGIS session that loaded torch keeps
    using its files until it restarts; Windows would refuse anyway): the next call removes it.
    Staging entries younger than ``staging_age_s`` stay: another QGIS window on the same
    profile may be installing right now.
    """
    active = active_folder(root)
    now = time.time()
    for path in root.iterdir() if root.is_dir() else ():
        staging = is_temporary(path)
        stale = staging or (is_site(path) and path != active)
        if not stale or in_use(path):
            continue
        with contextlib.suppress(OSError):
            if staging and now - path.stat().st_mtime < staging_age_s:
                continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _is_inside(entry: str, root: Path) -> bool:
    try:
        return Path(entry).resolve().is_relative_to(root.resolve())
    except (OSError, ValueError):
        return False
