"""The ways an analyst runs the algorithm beyond one dialog: the batch interface and a graphical model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import processing
import pytest
import rasterio
from affine import Affine
from qgis.core import (
    QgsPalettedRasterRenderer,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QPointF
from qgis.PyQt.QtWidgets import QTextEdit

from core import synthetic
from core.models.card import SECOND_CLASSES

pytestmark = pytest.mark.qgis


def from_to_layers(project) -> list:
    return [layer for layer in project.mapLayers().values() if layer.name().startswith("From-to change")]


def assert_styled(layer, path: Path) -> None:
    renderer = layer.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    labels = {int(c.value): c.label for c in renderer.classes()}
    with rasterio.open(path) as src:
        present = {int(v) for v in np.unique(src.read(1))}
    assert set(labels) == present | {0}
    assert labels[0] == "No change"
    assert all("->" in label or "unresolved" in label for value, label in labels.items() if value)


@pytest.fixture
def tile_pairs(tmp_path: Path) -> list[tuple[Path, Path]]:
    """Three neighbouring tile pairs, as a scene cut into tiles would come."""
    palette = [c.color for c in SECOND_CLASSES]
    pairs = []
    for i in range(3):
        transform = Affine(1.0, 0.0, 500000.0 + 64 * i, 0.0, -1.0, 5000000.0)
        t1, t2, _ = synthetic.write_pair(tmp_path / "tiles", palette, height=64, width=64, seed=i,
                                         transform=transform)
        pairs.append((t1.rename(t1.with_name(f"tile{i}_2019.tif")), t2.rename(t2.with_name(f"tile{i}_2023.tif"))))
    return pairs


def test_batch_interface_runs_every_pair_and_styles_every_result(scd_provider, semantic_model, tile_pairs, project,
                                                                 batch_dialog, tmp_path):
    """The real batch dialog: rows loaded from a saved batch file, run, results loaded and styled."""
    rows = [{"PARAMETERS": {"INPUT_T1": repr(str(t1)), "INPUT_T2": repr(str(t2)), "MODEL": repr(str(semantic_model)),
                            "TILE_SIZE": "0", "OVERLAP": "25", "BATCH_SIZE": "4", "DEVICE": "0", "MIN_AREA": "0"},
             "OUTPUTS": {"OUTPUT_FROMTO": str(tmp_path / f"fromto{i}.tif"),
                         "OUTPUT_REPORT": str(tmp_path / f"report{i}.html")}}
            for i, (t1, t2) in enumerate(tile_pairs)]
    dialog = batch_dialog("scd:semanticchange", rows)
    panel = dialog.mainWidget()
    assert panel.batchRowCount() == 3
    table = panel.tblParameters
    shown = {table.horizontalHeaderItem(c).text() for c in range(table.columnCount())
             if table.horizontalHeaderItem(c) and not table.isColumnHidden(c)}
    for option in ("Tile size", "Tile overlap", "Batch size", "Device", "Bands of T1", "Bands of T2"):
        assert any(header.startswith(option) for header in shown), (option, shown)
    panel.checkLoadLayersOnCompletion.setChecked(True)

    dialog.runAlgorithm()

    # Optional outputs left empty in the grid are no "layers not correctly generated".
    log = dialog.findChild(QTextEdit, "txtLog").toPlainText()
    assert log.count("correctly executed") == 3
    assert "not correctly generated" not in log
    assert all((tmp_path / f"report{i}.html").exists() for i in range(3))
    assert f"Transition report: {tmp_path / 'report0.html'}" in log

    layers = sorted(from_to_layers(project), key=lambda layer: layer.source())
    assert [Path(layer.source()).name for layer in layers] == ["fromto0.tif", "fromto1.tif", "fromto2.tif"]
    for layer in layers:
        assert_styled(layer, Path(layer.source()))
    # Named after each tile pair, so forty of them can be told apart in the layer panel.
    assert [layer.name() for layer in layers] == [f"From-to change: tile{i}_2019 -> tile{i}_2023" for i in range(3)]
    dialog.close()


def build_model(path: Path) -> Path:
    """A graphical model as the model designer saves it: from-to change, then QGIS's unique values report."""
    model = QgsProcessingModelAlgorithm("Change and its transitions", "Semantic change detection")
    for name, parameter, y in (
        ("t1", QgsProcessingParameterRasterLayer("t1", "Earlier image"), 50),
        ("t2", QgsProcessingParameterRasterLayer("t2", "Later image"), 120),
        ("model", QgsProcessingParameterFile("model", "Model file"), 190),
    ):
        component = QgsProcessingModelParameter(name)
        component.setPosition(QPointF(100, y))
        model.addModelParameter(parameter, component)

    change = QgsProcessingModelChildAlgorithm("scd:semanticchange")
    change.setChildId("semanticchange")
    change.setDescription("Semantic change (from-to)")
    change.setPosition(QPointF(350, 120))
    for name, source in (("INPUT_T1", "t1"), ("INPUT_T2", "t2"), ("MODEL", "model")):
        change.addParameterSources(name, [QgsProcessingModelChildParameterSource.fromModelParameter(source)])
    for name, value in (("TILE_SIZE", 0), ("OVERLAP", 25), ("BATCH_SIZE", 4), ("DEVICE", 0), ("MIN_AREA", 0)):
        change.addParameterSources(name, [QgsProcessingModelChildParameterSource.fromStaticValue(value)])
    fromto = QgsProcessingModelOutput("fromto", "From-to change")
    fromto.setChildOutputName("OUTPUT_FROMTO")
    fromto.setChildId("semanticchange")
    change.setModelOutputs({"fromto": fromto})
    model.addChildAlgorithm(change)

    report = QgsProcessingModelChildAlgorithm("native:rasterlayeruniquevaluesreport")
    report.setChildId("uniquevalues")
    report.setDescription("Transitions found")
    report.setPosition(QPointF(600, 120))
    report.addParameterSources("INPUT", [
        QgsProcessingModelChildParameterSource.fromChildOutput("semanticchange", "OUTPUT_FROMTO")])
    report.addParameterSources("BAND", [QgsProcessingModelChildParameterSource.fromStaticValue(1)])
    table = QgsProcessingModelOutput("transitions", "Transitions found")
    table.setChildOutputName("OUTPUT_TABLE")
    table.setChildId("uniquevalues")
    report.setModelOutputs({"transitions": table})
    model.addChildAlgorithm(report)
    assert model.toFile(str(path))
    return path


def test_graphical_model_chains_semantic_change_with_a_native_algorithm(scd_provider, semantic_model, image_pair,
                                                                         project, tmp_path):
    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(build_model(tmp_path / "change.model3")))
    assert [model.childAlgorithm(c).algorithmId() for c in ("semanticchange", "uniquevalues")] == [
        "scd:semanticchange", "native:rasterlayeruniquevaluesreport"]
    target = tmp_path / "fromto.tif"

    results = processing.runAndLoadResults(model, {
        "t1": str(image_pair[0]), "t2": str(image_pair[1]), "model": str(semantic_model),
        "semanticchange:fromto": str(target), "uniquevalues:transitions": str(tmp_path / "transitions.gpkg")})

    assert results["semanticchange:fromto"] == str(target)
    (layer,) = [lyr for lyr in project.mapLayers().values() if lyr.source() == str(target)]
    assert_styled(layer, target)
    transitions = QgsVectorLayer(str(tmp_path / "transitions.gpkg"), "t", "ogr")
    with rasterio.open(target) as src:
        present = {int(v) for v in np.unique(src.read(1))}
    assert {int(f["value"]) for f in transitions.getFeatures()} == present
