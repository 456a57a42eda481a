"""The object QGIS creates through ``classFactory``: registers the Processing provider."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QObject, pyqtSignal

from . import dependencies
from .provider import SemanticChangeProvider
from .resources import plugin_icon

MENU = "Semantic change detection"
INSTALLER_ACTION = "Install or repair dependencies…"


class _InstallerOffer(QObject):
    """Carries "packages are missing" from a Processing worker thread to the main thread, which opens the dialog."""

    needed = pyqtSignal(str)


class SemanticChangePlugin:
    """Registers the provider in ``initProcessing`` (which ``qgis_process`` calls too) and removes it on unload.

    The Processing toolbox, batch interface, model designer and ``qgis_process`` are the
    plugin's user interface; its one menu entry (Plugins > Semantic change detection)
    opens the dependency installer, which a run that finds torch missing offers too.
    """

    def __init__(self, iface: Any) -> None:
        self.iface = iface
        self.provider: SemanticChangeProvider | None = None
        self.installer_action: Any = None
        self.installer_dialog: Any = None
        self._offer: _InstallerOffer | None = None
        self._offered = False

    def initProcessing(self) -> None:
        if self.provider is None:
            self.provider = SemanticChangeProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        self.initProcessing()
        from qgis.PyQt.QtWidgets import QAction

        self.installer_action = QAction(plugin_icon(), INSTALLER_ACTION, self.iface.mainWindow())
        self.installer_action.triggered.connect(lambda: self.show_installer())
        self.iface.addPluginToMenu(MENU, self.installer_action)
        self._offer = _InstallerOffer()
        self._offer.needed.connect(self._offer_once)  # queued when emitted from a worker thread
        dependencies.offer_installer = self._offer.needed.emit

    def show_installer(self, reason: str | None = None) -> Any:
        """Open (or raise) the installer dialog in front of QGIS; ``reason`` says why it was opened for the user.

        A failed run offers the dialog while the algorithm's dialog is open, and that one is
        modal (Processing runs it with ``exec_``): a window parented to QGIS's main window
        then opens behind it and takes no input. The installer is therefore parented to the
        modal dialog while one is open, and handed back to the main window when it closes,
        so that closing the algorithm dialog neither deletes it nor stops an install.
        """
        from qgis.PyQt import sip
        from qgis.PyQt.QtWidgets import QApplication, QDialog

        from .installer_dialog import InstallerDialog

        if self.installer_dialog is not None and sip.isdeleted(self.installer_dialog):
            self.installer_dialog = None
        modal = QApplication.activeModalWidget()
        parent = modal if isinstance(modal, QDialog) and modal is not self.installer_dialog else \
            self.iface.mainWindow()
        if self.installer_dialog is None:
            self.installer_dialog = InstallerDialog(parent)
        else:
            self._reparent_installer(parent)
        if parent is modal:
            modal.finished.connect(self._installer_to_main_window)
        self.installer_dialog.set_reason(reason)
        self.installer_dialog.show()
        self.installer_dialog.raise_()
        self.installer_dialog.activateWindow()
        self.installer_dialog.refresh()
        return self.installer_dialog

    def _reparent_installer(self, parent: Any) -> None:
        dialog = self.installer_dialog
        if dialog is None or dialog.parentWidget() is parent:
            return
        visible, geometry = dialog.isVisible(), dialog.geometry()
        dialog.setParent(parent, dialog.windowFlags())  # hides the window: shown again where it was
        dialog.setGeometry(geometry)
        if visible:
            dialog.show()

    def _installer_to_main_window(self) -> None:
        """The modal dialog the installer was opened over has closed: the installer stays, under QGIS's window."""
        if self.installer_dialog is not None:
            self._reparent_installer(self.iface.mainWindow())

    def _offer_once(self, message: str) -> None:
        """A run found packages missing: open the dialog, once per session (a batch of runs must not nag)."""
        if not self._offered:
            self._offered = True
            self.show_installer(message)

    def unload(self) -> None:
        if dependencies.offer_installer is not None and self._offer is not None:
            dependencies.offer_installer = None
        if self.installer_action is not None:
            self.iface.removePluginMenu(MENU, self.installer_action)
            self.installer_action = None
        if self.installer_dialog is not None:
            self.installer_dialog.close()
            self.installer_dialog = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
