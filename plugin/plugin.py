"""The object QGIS creates through ``classFactory``: registers the Processing provider."""

from __future__ import annotations

import weakref
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
        self._watched: weakref.WeakSet[Any] = weakref.WeakSet()  # owners of the installer whose signals are connected

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

        A run that finds torch missing offers the dialog while its algorithm dialog is open,
        and that dialog raises itself when the run fails (to show its log), which put the
        installer behind it. So the installer belongs to the window it was offered from
        (:meth:`_owner`): owned windows stay above their owner, and a modal owner does not
        block them. It is raised again once the run has ended, and handed back to QGIS's
        main window when its owner closes, so that closing the algorithm dialog neither
        deletes it nor stops an install.
        """
        from .installer_dialog import InstallerDialog

        if self.installer_dialog is not None and self._deleted(self.installer_dialog):
            self.installer_dialog = None
        owner = self._owner(offered_by_a_run=reason is not None)
        if self.installer_dialog is None:
            self.installer_dialog = InstallerDialog(owner)
        else:
            self._reparent_installer(owner)
        self._watch(owner)
        self.installer_dialog.set_reason(reason)
        self._bring_installer_forward()
        self.installer_dialog.refresh()
        return self.installer_dialog

    def _owner(self, offered_by_a_run: bool) -> Any:
        """The window the installer goes in front of: the dialog in use (a modal one, the active one, or, for an
        offer from a run, the open Processing dialog), else QGIS's main window."""
        from qgis.gui import QgsProcessingAlgorithmDialogBase
        from qgis.PyQt.QtWidgets import QApplication, QDialog

        for window in (QApplication.activeModalWidget(), QApplication.activeWindow()):
            if isinstance(window, QDialog) and window is not self.installer_dialog and window.isVisible():
                return window
        processing = [window for window in QApplication.topLevelWidgets() if offered_by_a_run
                      and isinstance(window, QgsProcessingAlgorithmDialogBase) and window.isVisible()]
        return processing[-1] if processing else self.iface.mainWindow()

    def _watch(self, owner: Any) -> None:
        """Raise the installer after the owner's run has ended; hand it to the main window when the owner closes."""
        from qgis.gui import QgsProcessingAlgorithmDialogBase
        from qgis.PyQt.QtCore import QTimer
        from qgis.PyQt.QtWidgets import QDialog

        if owner is self.iface.mainWindow() or owner in self._watched:
            return
        self._watched.add(owner)
        if isinstance(owner, QgsProcessingAlgorithmDialogBase):
            # A failed run raises its dialog after this signal: the installer goes back on top after that.
            owner.algorithmFinished.connect(lambda *_: QTimer.singleShot(0, self._bring_installer_forward))
        if isinstance(owner, QDialog):
            # QDialog's signal: Processing dialogs shadow the name "finished" with a method of their own.
            closed = QDialog.finished.__get__(owner, QDialog)
            closed.connect(lambda *_: self._reparent_installer(self.iface.mainWindow()))

    def _bring_installer_forward(self) -> None:
        dialog = self.installer_dialog
        if dialog is not None and not self._deleted(dialog):
            dialog.show()
            dialog.raise_()
            dialog.activateWindow()

    def _reparent_installer(self, parent: Any) -> None:
        dialog = self.installer_dialog
        if dialog is None or self._deleted(dialog) or dialog.parentWidget() is parent:
            return
        visible, geometry = dialog.isVisible(), dialog.geometry()
        dialog.setParent(parent, dialog.windowFlags())  # hides the window: shown again where it was
        dialog.setGeometry(geometry)
        if visible:
            dialog.show()

    @staticmethod
    def _deleted(widget: Any) -> bool:
        from qgis.PyQt import sip

        return sip.isdeleted(widget)

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
