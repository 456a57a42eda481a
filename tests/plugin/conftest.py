"""A real QGIS (pytest-qgis, offscreen) with the plugin imported the way QGIS imports it.

QGIS imports a plugin as a top-level package named after its folder, and the plugin
reaches the engine through relative imports (``from ..core import ...``). The tests
do the same: a temporary folder holds a symlink ``semantic_change`` -> the
repository, that folder goes on ``sys.path``, and ``classFactory`` registers the
provider. Model files are made once per session with the training CLI's ``init``,
as a user would; the networks are untrained, so tests check structure, legends,
styling and error paths, never accuracy.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
from qgis.core import QgsApplication, QgsProcessingFeedback, QgsProject

from core import synthetic
from core.models.card import SECOND_CLASSES
from training_cli.cli import main as training_cli

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "semantic_change"
#: The fastest network of each task at 64 px tiles on a CPU.
SEMANTIC_NETWORK = "gapl_scd"
BINARY_NETWORK = "cldrnet"
TILE = 64


@pytest.fixture(scope="session")
def plugins_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``semantic_change`` -> the repository, as QGIS's plugin folder would."""
    folder = tmp_path_factory.mktemp("plugins")
    (folder / PACKAGE).symlink_to(REPO, target_is_directory=True)
    return folder


@pytest.fixture(scope="session")
def plugin_package(plugins_folder: Path) -> Iterator[ModuleType]:
    sys.path.insert(0, str(plugins_folder))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(plugins_folder))


@pytest.fixture(scope="session")
def scd_provider(qgis_processing: None, qgis_iface: object, plugin_package: ModuleType) -> Iterator[object]:
    """The plugin loaded through ``classFactory`` with its provider registered."""
    plugin = plugin_package.classFactory(qgis_iface)
    plugin.initProcessing()
    provider = QgsApplication.processingRegistry().providerById("scd")
    assert provider is not None
    yield provider
    plugin.unload()


def _checkpoint(folder: Path, network: str, preset: str) -> Path:
    path = folder / f"{network}-{preset}-{TILE}.pt"
    assert training_cli(["init", "--model", network, "--preset", preset, "--tile-size", str(TILE),
                         "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="session")
def semantic_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return _checkpoint(tmp_path_factory.mktemp("models"), SEMANTIC_NETWORK, "second")


@pytest.fixture(scope="session")
def binary_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return _checkpoint(tmp_path_factory.mktemp("models"), BINARY_NETWORK, "binary")


@pytest.fixture(scope="session")
def image_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 96 x 96 px RGB pair on one UTM grid: with TILE_SIZE=64, 4 tiles at 25 % overlap, one batch."""
    palette = [c.color for c in SECOND_CLASSES]
    t1, t2, _ = synthetic.write_pair(tmp_path_factory.mktemp("pair"), palette, height=96, width=96, seed=5)
    return t1, t2


@pytest.fixture
def project(qgis_new_project: QgsProject) -> QgsProject:
    return QgsProject.instance()


class RecordingFeedback(QgsProcessingFeedback):
    """Keeps the log and can cancel itself once progress passes a threshold."""

    def __init__(self, cancel_at: float | None = None) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.warnings: list[str] = []
        self.progress: list[float] = []
        self.cancel_at = cancel_at
        self.progressChanged.connect(self._on_progress)

    def pushInfo(self, info: str) -> None:
        self.lines.append(info)
        super().pushInfo(info)

    def pushWarning(self, warning: str) -> None:
        self.lines.append(warning)
        self.warnings.append(warning)
        super().pushWarning(warning)

    def reportError(self, error: str, fatalError: bool = False) -> None:
        self.lines.append(error)
        super().reportError(error, fatalError)

    def _on_progress(self, value: float) -> None:
        self.progress.append(value)
        if self.cancel_at is not None and value >= self.cancel_at:
            self.cancel()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def batch_dialog(qgis_iface: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The real batch dialog of an algorithm, its rows loaded from a saved batch file as a user loads them."""
    import json

    from processing.gui import BatchPanel
    from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog
    from qgis.core import QgsApplication

    def open_with(algorithm_id: str, rows: list[dict]) -> object:
        batch_file = tmp_path / "batch-rows.json"
        batch_file.write_text(json.dumps(rows))
        monkeypatch.setattr(BatchPanel.QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(batch_file), ""))
        algorithm = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
        dialog = BatchAlgorithmDialog(algorithm, parent=qgis_iface.mainWindow())
        dialog.mainWidget().load()
        return dialog

    return open_with


@pytest.fixture
def feedback() -> RecordingFeedback:
    return RecordingFeedback()


@pytest.fixture
def make_feedback() -> type[RecordingFeedback]:
    """The feedback class, for tests that need one that cancels."""
    return RecordingFeedback
