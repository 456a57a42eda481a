"""The "Install or repair dependencies" dialog and its menu entry, in a real QGIS (pytest-qgis, offscreen)."""

from __future__ import annotations

import importlib
import platform
import sys
from pathlib import Path

import processing
import pytest
import torch
from qgis.core import QgsProcessingException
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QTextDocument
from qgis.PyQt.QtWidgets import QApplication, QDialog

pytestmark = pytest.mark.qgis

PACKAGE = "semantic_change"


@pytest.fixture
def modules(plugin_package):
    return (importlib.import_module(f"{PACKAGE}.plugin.installer"),
            importlib.import_module(f"{PACKAGE}.plugin.installer_dialog"))


def _fake_install(root: Path, installer, files: dict[str, bytes]) -> Path:
    """A folder laid out as an install leaves it (pointer, dist-info RECORD with sizes), without running pip."""
    folder = root / "site-test"
    dist = folder / "demo-1.0.dist-info"
    dist.mkdir(parents=True)
    rows = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        rows.append(f"{name},sha256=x,{len(data)}")
    (dist / "RECORD").write_text("\n".join([*rows, "demo-1.0.dist-info/RECORD,,"]) + "\n")
    (root / installer.POINTER).write_text("site-test\n")
    return folder


def test_dialog_lists_packages_python_gpu_folder_and_space(qgis_iface, modules, tmp_path):
    installer, dialog_module = modules
    root = tmp_path / installer.FOLDER_NAME
    dialog = dialog_module.InstallerDialog(qgis_iface.mainWindow(), root=root)
    dialog.show()
    dialog.refresh(wait=True)

    labels = {key: label.text() for key, label in dialog.labels.items()}
    assert f"torch {torch.__version__} (QGIS's Python)" in labels["packages"]  # this Python's torch, found
    assert "numpy" in labels["packages"] and "rasterio" not in labels["packages"]  # QGIS's GDAL is enough
    python = installer.find_python()
    assert labels["python"].startswith(python.executable) and f"Python {platform.python_version()}" in labels["python"]
    assert f"pip {python.pip}" in labels["python"]
    assert labels["gpu"] == installer.detect_gpu().describe()
    assert labels["folder"] == f"{root} (nothing installed yet)"
    assert "GB needed for the" in labels["space"] and "GB free" in labels["space"]
    expected = "Reinstall" if not dialog.facts.missing else "Install"
    assert dialog.install_button.text() == expected and dialog.install_button.isEnabled()
    assert not dialog.cancel_button.isEnabled()

    dialog.copy_diagnostics()
    text = QApplication.clipboard().text()
    assert text.startswith("Semantic change detection: dependency diagnostics")
    assert "QGIS: 3." in text and f"torch: {torch.__version__}" in text and f"Install folder: {root}" in text
    assert "Last install log:" in text
    dialog.close()


def shown_text(rich: str) -> str:
    """What a rich-text label shows, with runs of white space (line breaks included) as one space."""
    document = QTextDocument()
    document.setHtml(rich)
    return " ".join(document.toPlainText().split())


def test_a_runs_reason_shows_every_command_and_squeezes_nothing(qgis_iface, modules, tmp_path):
    """The reason's pip commands hold ``<=``, which rich text took for tags; a long reason hid numpy's line."""
    installer, dialog_module = modules
    dependencies = importlib.import_module(f"{PACKAGE}.plugin.dependencies")
    reason = dependencies.missing_message([dependencies.MissingPackage("torch", "torch", "No module named 'torch'")])
    assert '"torch>=2.13,<=' in reason and "start QGIS again" in reason
    dialog = dialog_module.InstallerDialog(qgis_iface.mainWindow(), root=tmp_path / installer.FOLDER_NAME)
    dialog.set_reason(reason)
    dialog.show()
    dialog.refresh(wait=True)
    dialog._install_finished(installer.InstallError("pip failed (exit status 1): see the log above"))
    dialog.wait()  # the facts gathered again after the failed install
    for _ in range(10):  # the facts arrive as a queued signal, then the layout is redone
        QApplication.processEvents()

    assert shown_text(dialog.reason_label.text()) == "A run could not start: " + " ".join(reason.split())
    assert dialog.status.text().startswith("Install failed, nothing changed")
    packages = dialog.labels["packages"]
    assert packages.text().splitlines()[-1].startswith("numpy ")
    for label in (*dialog.labels.values(), dialog.status):  # every line of every fact in view
        assert label.height() >= label.heightForWidth(label.width()), label.text()
    dialog.set_reason(None)
    assert not dialog.reason_label.isVisibleTo(dialog)
    dialog.close()


def test_dialog_offers_repair_for_a_damaged_folder(qgis_iface, modules, tmp_path):
    installer, dialog_module = modules
    root = tmp_path / installer.FOLDER_NAME
    folder = _fake_install(root, installer, {"demo.py": b"x = 1\n" * 50})
    (folder / "demo.py").write_bytes(b"x = 1\n")  # truncated
    dialog = dialog_module.InstallerDialog(qgis_iface.mainWindow(), root=root)
    dialog.refresh(wait=True)
    assert dialog.install_button.text() == "Repair (reinstall)"
    assert "demo (1 file(s) missing or truncated, e.g. demo.py)" in dialog.labels["folder"].text()
    assert "damaged" in dialog.status.text()
    dialog.close()


def test_choice_and_sources_become_installer_options(qgis_iface, modules, tmp_path):
    _, dialog_module = modules
    dialog = dialog_module.InstallerDialog(qgis_iface.mainWindow(), root=tmp_path)
    dialog.cuda_button.setChecked(True)
    dialog.cuda_build.setCurrentText("cu126")
    dialog.wheel_folder.setText(str(tmp_path))
    dialog.offline.setChecked(True)
    dialog.proxy.setText("http://proxy:8080")
    options = dialog.options()
    assert (options.variant, options.cuda_build, options.find_links, options.no_index, options.proxy) == (
        "cuda", "cu126", [str(tmp_path)], True, "http://proxy:8080")
    dialog.cpu_button.setChecked(True)
    assert dialog.options().variant == "cpu" and dialog.options().cuda_build is None
    dialog.close()


def test_a_session_that_loaded_torch_needs_a_restart(modules):
    _, dialog_module = modules
    assert "torch" in sys.modules
    assert dialog_module.restart_needed()


def test_menu_entry_opens_the_dialog_and_a_run_without_torch_offers_it(
        scd_provider, qgis_iface, plugin_package, semantic_model, monkeypatch: pytest.MonkeyPatch):
    plugin = plugin_package.classFactory(qgis_iface)
    monkeypatch.setattr(plugin, "initProcessing", lambda: None)  # the session's provider is registered already
    plugin.initGui()
    dependencies = importlib.import_module(f"{PACKAGE}.plugin.dependencies")
    try:
        assert plugin.installer_action.text() == "Install or repair dependencies…"
        assert dependencies.offer_installer is not None
        shown = plugin.show_installer()
        assert shown.isVisible() and shown.root == dependencies.private_root()
        shown.wait()
        shown.close()

        for name in [n for n in sys.modules if n == "torch" or n.startswith("torch.")]:
            monkeypatch.delitem(sys.modules, name)
        monkeypatch.setitem(sys.modules, "torch", None)
        with pytest.raises(QgsProcessingException, match="Install or repair dependencies"):
            processing.run("scd:modelinfo", {"MODEL": str(semantic_model)})
        QApplication.processEvents()  # the offer travels as a queued signal
        assert plugin.installer_dialog.isVisible()
        assert "cannot import: torch" in plugin.installer_dialog.reason_label.text()
        plugin.installer_dialog.wait()
    finally:
        plugin.unload()
    assert dependencies.offer_installer is None


def test_the_installer_offered_by_a_run_stays_in_front_of_the_algorithm_dialog(
        scd_provider, qgis_iface, plugin_package, monkeypatch: pytest.MonkeyPatch):
    """A failed run raises its algorithm dialog (to show the log) after the offer: the installer was left behind."""
    from processing.tools.general import createAlgorithmDialog

    plugin = plugin_package.classFactory(qgis_iface)
    monkeypatch.setattr(plugin, "initProcessing", lambda: None)  # the session's provider is registered already
    plugin.initGui()
    monkeypatch.setattr(qgis_iface, "browserModel", lambda: None)  # pytest-qgis's stand-in has none
    algorithm_dialog = createAlgorithmDialog("scd:modelinfo")
    algorithm_dialog.show()
    try:
        importlib.import_module(f"{PACKAGE}.plugin.dependencies").offer_installer("torch is missing")
        QApplication.processEvents()  # the offer travels as a queued signal
        installer = plugin.installer_dialog
        assert installer is not None and installer.isVisible() and installer.isWindow()
        assert installer.parentWidget() is algorithm_dialog  # owned windows stay above their owner
        assert "torch is missing" in installer.reason_label.text()

        raised = []
        monkeypatch.setattr(installer, "raise_", lambda: raised.append("installer"))
        algorithm_dialog.algorithmFinished.emit(False, {})
        algorithm_dialog.raise_()  # what the dialog does when its run has failed, after that signal
        raised.append("algorithm dialog")
        QApplication.processEvents()
        assert raised == ["algorithm dialog", "installer"]

        algorithm_dialog.reject()  # closing the algorithm dialog leaves the installer open, under QGIS's window
        assert plugin.installer_dialog is installer and installer.isVisible()
        assert installer.parentWidget() is qgis_iface.mainWindow()
        installer.wait()
    finally:
        plugin.unload()


def test_the_installer_is_not_blocked_by_a_modal_dialog(scd_provider, qgis_iface, plugin_package,
                                                         monkeypatch: pytest.MonkeyPatch):
    plugin = plugin_package.classFactory(qgis_iface)
    monkeypatch.setattr(plugin, "initProcessing", lambda: None)
    plugin.initGui()
    modal = QDialog(qgis_iface.mainWindow())
    modal.setWindowModality(Qt.ApplicationModal)
    modal.show()
    try:
        assert QApplication.activeModalWidget() is modal
        shown = plugin.show_installer("torch is missing")
        assert shown.parentWidget() is modal and shown.isVisible()  # a window it owns takes input
        modal.reject()
        assert shown.parentWidget() is qgis_iface.mainWindow() and shown.isVisible()
        shown.wait()
    finally:
        plugin.unload()
        modal.deleteLater()


def _wait_for_install(dialog, timeout: float = 120) -> None:
    import time

    deadline = time.time() + timeout
    while dialog.installer is not None and time.time() < deadline:  # the finished signal clears it
        QApplication.processEvents()
        time.sleep(0.05)


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="needs the system Python")
def test_install_and_cancel_from_the_dialog(qgis_iface, modules, tmp_path, monkeypatch: pytest.MonkeyPatch):
    """Install runs in the background and streams pip's log; Cancel leaves what was there; the verdict is kept."""
    installer, dialog_module = modules
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("mpmath==1.3.0\n", encoding="utf-8")
    root = tmp_path / installer.FOLDER_NAME
    dialog = dialog_module.InstallerDialog(qgis_iface.mainWindow(), root=root)
    dialog.refresh(wait=True)
    dialog.facts.python = installer.describe_python("/usr/bin/python3")  # the Python without mpmath
    monkeypatch.setattr(dialog, "options", lambda: installer.Options(requirements=requirements,
                                                                      use_pytorch_index=False))

    dialog.start_install()
    assert not dialog.install_button.isEnabled() and dialog.cancel_button.isEnabled()
    _wait_for_install(dialog)
    assert "Processing " in dialog.log_view.toPlainText() or "Collecting " in dialog.log_view.toPlainText()
    assert dialog.progress.value() == 100
    # torch is loaded in this test session, so the dialog must ask for a restart
    assert dialog.status.text().startswith("Installed. Restart QGIS")
    first = installer.active_folder(root)
    assert first is not None and (first / "mpmath").is_dir()

    dialog.start_install()
    dialog.cancel_install()
    _wait_for_install(dialog)
    assert dialog.status.text() == "Cancelled: nothing changed, the previous packages are still in use."
    assert installer.active_folder(root) == first and not installer.check_folder(root).broken
    assert dialog.install_button.isEnabled() and not dialog.cancel_button.isEnabled()
    dialog.wait()  # the facts refreshed after each install
    dialog.close()
