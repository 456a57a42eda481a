"""Paths and links the algorithms and the provider share."""

from __future__ import annotations

from pathlib import Path

from qgis.PyQt.QtGui import QIcon

ICON = Path(__file__).resolve().parents[1] / "resources" / "icon.svg"
HOMEPAGE = "https://github.com/scd-plugin/semantic-change-detection"


def plugin_icon() -> QIcon:
    return QIcon(str(ICON))
