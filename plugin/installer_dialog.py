"""The "Install or repair dependencies" dialog: the facts, the choice of build, Install, the log, Cancel, diagnostics.

All the work is :mod:`.installer`'s; this module only shows it. Facts that take seconds
to gather (importing torch in a separate process, asking ``nvidia-smi``) and the install
itself run in a background thread, so QGIS stays responsive; their results come back to
the dialog through queued Qt signals.
"""

from __future__ import annotations

import html
import platform
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgis.core import Qgis
from qgis.PyQt.QtCore import QObject, QSize, Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QApplication,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from . import dependencies, installer


@dataclass
class Facts:
    """What the dialog shows, gathered off the main thread."""

    python: installer.PythonInfo | None
    python_problem: str | None
    probed: dict
    gpu: installer.GpuInfo
    check: installer.FolderCheck
    free_gb: float

    @property
    def missing(self) -> list[str]:
        return installer.missing_from_probe(self.probed)


def gather_facts(root: Path) -> Facts:
    """Everything the dialog lists; slow (a separate Python imports torch), so run it off the main thread."""
    try:
        python, problem = installer.find_python(), None
    except installer.InstallError as error:
        python, problem = None, str(error)
    folder = installer.active_folder(root)
    probed = installer.probe(python.executable, folder) if python else {"error": problem}
    return Facts(python=python, python_problem=problem, probed=probed, gpu=installer.detect_gpu(),
                 check=installer.check_folder(root), free_gb=installer.free_space_gb(root))


class _Bridge(QObject):
    facts = pyqtSignal(object)
    line = pyqtSignal(str)
    progress = pyqtSignal(float, str)
    finished = pyqtSignal(object)  # installer.Result or an exception


class _Body(QScrollArea):
    """The dialog's upper part (reason, facts, choice of build): as tall as its text, scrolling on a small screen.

    Qt leaves the height of word-wrapped labels out of a dialog's minimum size, so a long
    reason or message squeezed the labels and hid the package list's last line (numpy).
    """

    def __init__(self, content: QWidget) -> None:
        super().__init__()
        self.setWidget(content)
        self.setWidgetResizable(True)  # honours the content's height for the width it gets
        self.setFrameShape(QFrame.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)

    def sizeHint(self) -> QSize:
        """As tall as the content at the width the dialog gives it (known before the first layout, unlike ours)."""
        content, dialog = self.widget(), self.window()
        margins = dialog.layout().contentsMargins() if dialog.layout() is not None else self.contentsMargins()
        width = max(dialog.width() - margins.left() - margins.right(), 1)
        return QSize(content.sizeHint().width(), content.heightForWidth(width))

    def minimumSizeHint(self) -> QSize:
        return QSize(super().minimumSizeHint().width(), 8 * self.fontMetrics().lineSpacing())


class InstallerDialog(QDialog):
    def __init__(self, parent: Any = None, root: Path | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Semantic change detection: install or repair dependencies")
        self.root = Path(root) if root is not None else dependencies.private_root()
        self.facts: Facts | None = None
        self._outcome = ""  # what the last install did (restart or not), kept over the refreshed facts
        self.installer: installer.Installer | None = None
        self._threads: list[threading.Thread] = []
        self._bridge = _Bridge()
        self._bridge.facts.connect(self._show_facts)
        self._bridge.line.connect(self._append_log)
        self._bridge.progress.connect(self._show_progress)
        self._bridge.finished.connect(self._install_finished)
        self._build()
        self.resize(820, 640)

    # -- layout ----------------------------------------------------------------------------

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        content = QWidget()
        upper = QVBoxLayout(content)
        upper.setContentsMargins(0, 0, 0, 0)
        self.body = _Body(content)
        layout.addWidget(self.body)
        # The reason holds shell commands ("torch>=2.13,<=2.14.1"): set_reason escapes it into rich text. It is
        # selectable, so that the commands can be copied.
        self.reason_label = QLabel()
        self.reason_label.setTextFormat(Qt.RichText)
        self.reason_label.setWordWrap(True)
        self.reason_label.setTextInteractionFlags(Qt.TextSelectableByMouse | Qt.TextSelectableByKeyboard)
        self.reason_label.setVisible(False)
        upper.addWidget(self.reason_label)

        facts = QGroupBox("What this QGIS has")
        form = QFormLayout(facts)
        self.labels: dict[str, QLabel] = {}
        for key, title in (("packages", "Packages"), ("python", "QGIS Python"), ("gpu", "NVIDIA GPU"),
                           ("folder", "Install folder"), ("space", "Disk space")):
            label = QLabel("checking…")
            label.setTextFormat(Qt.PlainText)  # versions, paths and pip's errors, never markup
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextSelectableByMouse)
            self.labels[key] = label
            form.addRow(f"{title}:", label)
        upper.addWidget(facts)

        choice = QGroupBox("Build of PyTorch to install")
        choice_layout = QVBoxLayout(choice)
        row = QHBoxLayout()
        self.cpu_button = QRadioButton("CPU (works everywhere)")
        self.cuda_button = QRadioButton("CUDA (NVIDIA GPU)")
        self.cuda_build = QComboBox()
        self.cuda_build.addItems(installer.CUDA_BUILDS)
        group = QButtonGroup(self)
        for button in (self.cpu_button, self.cuda_button):
            group.addButton(button)
            row.addWidget(button)
        row.addWidget(self.cuda_build)
        row.addStretch()
        self.cpu_button.setChecked(True)
        self.cuda_build.setEnabled(False)
        self.cpu_button.toggled.connect(self._update_space)
        self.cuda_button.toggled.connect(self.cuda_build.setEnabled)
        if platform.system() == "Darwin":  # no CUDA on macOS; PyPI's build there also uses the Apple GPU
            self.cuda_button.setEnabled(False)
            self.cpu_button.setText("CPU and Apple GPU (MPS)")
        choice_layout.addLayout(row)
        sources = QFormLayout()
        self.wheel_folder = QLineEdit()
        self.wheel_folder.setPlaceholderText("optional: a folder of .whl files (offline machines)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_wheels)
        wheel_row = QHBoxLayout()
        wheel_row.addWidget(self.wheel_folder)
        wheel_row.addWidget(browse)
        self.offline = QCheckBox("only this folder (no network)")
        wheel_row.addWidget(self.offline)
        sources.addRow("Wheel folder:", wheel_row)
        self.index_url = QLineEdit()
        self.index_url.setPlaceholderText("optional: a package index replacing PyPI (corporate mirror)")
        sources.addRow("Index URL:", self.index_url)
        self.proxy = QLineEdit()
        self.proxy.setPlaceholderText("optional: http://user:password@proxy:port")
        sources.addRow("Proxy:", self.proxy)
        choice_layout.addLayout(sources)
        upper.addWidget(choice)

        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = QLabel()
        self.status.setTextFormat(Qt.PlainText)
        self.status.setWordWrap(True)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setPlaceholderText("pip's log appears here")
        self.log_view.setMinimumHeight(5 * self.log_view.fontMetrics().lineSpacing())
        layout.addWidget(self.log_view, 1)

        buttons = QHBoxLayout()
        self.install_button = QPushButton("Install")
        self.install_button.clicked.connect(self.start_install)
        self.cancel_button = QPushButton("Cancel install")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_install)
        self.copy_button = QPushButton("Copy diagnostics")
        self.copy_button.clicked.connect(self.copy_diagnostics)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        for button in (self.install_button, self.cancel_button, self.copy_button):
            buttons.addWidget(button)
        buttons.addStretch()
        buttons.addWidget(close)
        layout.addLayout(buttons)

    def set_reason(self, reason: str | None) -> None:
        """Say why the dialog opened (a run's message, plain text), or nothing.

        The message is escaped: its pip commands hold ``<=``, which rich text takes for the start
        of a tag. The two spaces that set each command apart in the log become line breaks here.
        """
        if reason:
            lines = "<br>".join(html.escape(part.strip()) for part in reason.split("  ") if part.strip())
            self.reason_label.setText(f"<b>A run could not start:</b><br>{lines}")
        else:
            self.reason_label.clear()
        self.reason_label.setVisible(bool(reason))
        self._fit()

    def _fit(self) -> None:
        """Grow the dialog to show all of its upper part (up to the screen's height; beyond it, that part scrolls).

        Called right after texts change, before Qt has laid anything out again: the size hints
        its layouts keep of the upper part's groups are dropped first, or the dialog would be
        fitted to the texts before.
        """
        for child in self.body.widget().findChildren(QWidget, options=Qt.FindDirectChildrenOnly):
            child.updateGeometry()
        self.body.updateGeometry()
        wanted = self.layout().totalSizeHint().height()
        screen = self.screen().availableGeometry().height() if self.screen() is not None else wanted
        frame = self.frameGeometry().height() - self.geometry().height()
        height = min(wanted, screen - frame)
        if height > self.height():
            self.resize(self.width(), height)

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        self._fit()

    # -- facts -----------------------------------------------------------------------------

    def refresh(self, wait: bool = False) -> None:
        """Gather the facts again in the background (``wait``: in this thread, for tests and scripts)."""
        for label in self.labels.values():
            label.setText("checking…")
        if wait:
            self._show_facts(gather_facts(self.root))
            return
        self._start(lambda: self._bridge.facts.emit(gather_facts(self.root)))

    def _show_facts(self, facts: Facts) -> None:
        self.facts = facts
        probed = facts.probed
        parts = []
        for name in installer.PROBED:
            entry = probed.get(name, {})
            if "version" in entry:
                where = "private folder" if installer.FOLDER_NAME in entry.get("file", "") else "QGIS's Python"
                parts.append(f"{name} {entry['version']} ({where})")
            else:
                error = entry.get("error", probed.get("error", "not checked"))
                parts.append(f"{name}: MISSING" if error.startswith("ModuleNotFoundError")
                             else f"{name}: BROKEN ({error})")
        if probed.get("cuda_build"):
            usable = "GPU usable" if probed.get("cuda_available") else "no usable GPU: runs on the CPU"
            parts[0] += f", CUDA {probed['cuda_build']} build, {usable}"
        elif "version" in probed.get("torch", {}):
            parts[0] += ", CPU build"
        self.labels["packages"].setText("\n".join(parts))
        if facts.python:
            pip = f"pip {facts.python.pip}" if facts.python.pip else "pip MISSING: install pip for this Python first"
            self.labels["python"].setText(f"{facts.python.executable} (Python {facts.python.version}; {pip})")
        else:
            self.labels["python"].setText(facts.python_problem or "not found")
        self.labels["gpu"].setText(facts.gpu.describe())
        self.labels["folder"].setText(f"{self.root} ({facts.check.describe()})")
        if facts.gpu.fitting_build:
            self.cuda_button.setChecked(True)
            self.cuda_build.setCurrentText(facts.gpu.fitting_build)
        self._update_space()
        if self._outcome:
            self.install_button.setText("Reinstall" if not facts.missing else "Install")
            self.status.setText(self._outcome)
        elif facts.check.broken:
            self.install_button.setText("Repair (reinstall)")
            self.status.setText("The private folder is damaged: Repair reinstalls its packages.")
        elif facts.missing:
            self.install_button.setText("Install")
            self.status.setText(f"Missing: {', '.join(facts.missing)}. Choose the build and click Install.")
        else:
            self.install_button.setText("Reinstall")
            self.status.setText("Everything the plugin needs is installed.")
        self.install_button.setEnabled(facts.python is not None and self.installer is None)
        self._fit()

    def _update_space(self) -> None:
        if self.facts is None:
            return
        variant = self._variant()
        needed = installer.SPACE_NEEDED_GB[variant]
        verdict = "enough" if self.facts.free_gb >= needed else "NOT ENOUGH"
        self.labels["space"].setText(f"about {needed:.0f} GB needed for the {variant.upper()} build; "
                                     f"{self.facts.free_gb:.1f} GB free ({verdict})")

    def _variant(self) -> str:
        return "cuda" if self.cuda_button.isChecked() else "cpu"

    def _browse_wheels(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of wheel files", self.wheel_folder.text())
        if folder:
            self.wheel_folder.setText(folder)

    # -- install ---------------------------------------------------------------------------

    def options(self) -> installer.Options:
        variant = self._variant()
        wheels = self.wheel_folder.text().strip()
        return installer.Options(variant=variant, cuda_build=self.cuda_build.currentText() if variant == "cuda"
                                 else None, find_links=[wheels] if wheels else [],
                                 no_index=bool(wheels) and self.offline.isChecked(),
                                 index_url=self.index_url.text().strip() or None,
                                 proxy=self.proxy.text().strip() or None)

    def start_install(self) -> None:
        if self.installer is not None:
            return
        python = self.facts.python.executable if self.facts and self.facts.python else None
        self.log_view.clear()
        self._outcome = ""
        self.installer = installer.Installer(self.root, python=python, options=self.options(),
                                             on_line=self._bridge.line.emit, on_progress=self._bridge.progress.emit)
        self.install_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.status.setText("Installing…")
        running = self.installer

        def work() -> None:
            try:
                outcome: object = running.run()
            except Exception as error:  # noqa: BLE001 - shown in the dialog, never raised into QGIS
                outcome = error
            self._bridge.finished.emit(outcome)

        self._start(work)

    def cancel_install(self) -> None:
        if self.installer is not None:
            self.status.setText("Cancelling…")
            self.installer.cancel()

    def _append_log(self, line: str) -> None:
        self.log_view.appendPlainText(line)
        bar = self.log_view.verticalScrollBar()
        bar.setValue(bar.maximum())  # follow pip, as a terminal would

    def _show_progress(self, fraction: float, what: str) -> None:
        self.progress.setValue(round(fraction * 100))
        if what:
            self.status.setText(what)

    def _install_finished(self, outcome: object) -> None:
        self.installer = None
        self.cancel_button.setEnabled(False)
        self.install_button.setEnabled(True)
        if isinstance(outcome, installer.CancelledError):
            self._outcome = "Cancelled: nothing changed, the previous packages are still in use."
        elif isinstance(outcome, Exception):
            self._outcome = f"Install failed, nothing changed: {outcome}"
        else:
            installer.activate(self.root)
            if restart_needed():
                self._outcome = ("Installed. Restart QGIS to use the new packages: this session has already "
                                 "loaded torch, and Python cannot unload it.")
            else:
                self._outcome = "Installed: the algorithms can run now, no restart needed."
        self.status.setText(self._outcome)
        self._fit()
        self.refresh()

    # -- diagnostics -----------------------------------------------------------------------

    def diagnostics(self) -> str:
        python = self.facts.python.executable if self.facts and self.facts.python else None
        return installer.diagnostics_text(self.root, python, qgis_version=Qgis.version(),
                                          probed=self.facts.probed if self.facts else None,
                                          gpu=self.facts.gpu if self.facts else None)

    def copy_diagnostics(self) -> None:
        QApplication.clipboard().setText(self.diagnostics())
        self.status.setText("Diagnostics copied: paste them into your bug report.")

    # -- threads ---------------------------------------------------------------------------

    def _start(self, target: Any) -> None:
        thread = threading.Thread(target=target, daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def wait(self, timeout: float = 600) -> None:
        """Wait for the background work (tests and scripts)."""
        for thread in list(self._threads):
            thread.join(timeout)

    def closeEvent(self, event: Any) -> None:
        if self.installer is not None:
            self.installer.cancel()  # closing QGIS or the dialog never leaves pip running
        super().closeEvent(event)


def restart_needed() -> bool:
    """True when this QGIS session has already imported (or failed to import) torch or torchvision.

    Python cannot unload native libraries, so a session that has loaded a torch keeps it;
    one that has not picks up the new folder at the next run, without a restart.
    """
    return any(name.split(".")[0] in ("torch", "torchvision") and module is not None
               for name, module in list(sys.modules.items()))
