"""The software version, read from the plugin's ``metadata.txt``.

QGIS requires the version in ``metadata.txt``; reading it from there keeps one
source of truth, so a checkpoint's ``software_version`` always names the release
that wrote it. The file is parsed line by line rather than with ``configparser``
because QGIS metadata often holds multi-line ``about``/``changelog`` values that
``configparser`` rejects.
"""

from __future__ import annotations

import re
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
#: Where ``metadata.txt`` may sit: the repository (or installed plugin) root, or its ``plugin/`` folder.
_CANDIDATES = (_ROOT / "metadata.txt", _ROOT / "plugin" / "metadata.txt")
_VERSION_LINE = re.compile(r"^\s*version\s*=\s*(\S+)\s*$", re.IGNORECASE)
_FALLBACK = "0.0.0"


def read_version(candidates: tuple[Path, ...] = _CANDIDATES) -> str:
    """Return the ``version=`` value of the first readable ``metadata.txt``.

    Args:
        candidates: Files to try, in order.

    Returns:
        The version string, or ``"0.0.0"`` when no file names one (e.g. a source
        checkout without plugin metadata), so that writing a checkpoint never fails
        over a missing version.
    """
    for path in candidates:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for line in text.splitlines():
            match = _VERSION_LINE.match(line)
            if match:
                return match.group(1)
    return _FALLBACK


__version__ = read_version()
