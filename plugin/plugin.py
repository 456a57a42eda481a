"""The object QGIS creates through ``classFactory``: registers the Processing provider."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsApplication

from .provider import SemanticChangeProvider


class SemanticChangePlugin:
    """Registers the provider in ``initProcessing`` (which ``qgis_process`` calls too) and removes it on unload.

    The plugin adds no menu or toolbar of its own: the Processing toolbox, batch
    interface, model designer and ``qgis_process`` are its user interface.
    """

    def __init__(self, iface: Any) -> None:
        self.iface = iface
        self.provider: SemanticChangeProvider | None = None

    def initProcessing(self) -> None:
        if self.provider is None:
            self.provider = SemanticChangeProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        self.initProcessing()

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
