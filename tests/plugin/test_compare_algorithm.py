"""``scd:compareclassifications`` in a real QGIS: styled from-to layer, matrix, polygons, report, batch, no torch."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import processing
import pytest
import rasterio
from helpers import WORLDCOVER, aligned_t2, crosstab, matrix_block, move_to_band_2, write_map, write_worldcover_pair
from qgis.core import QgsPalettedRasterRenderer, QgsProcessingException, QgsRasterLayer, QgsSingleSymbolRenderer

pytestmark = pytest.mark.qgis


def layer_named(project, prefix: str):
    (layer,) = [lyr for lyr in project.mapLayers().values() if lyr.name().startswith(prefix)]
    return layer


def test_two_maps_in_different_crss_give_a_styled_from_to_layer_and_the_cross_tabulation(
        scd_provider, project, feedback, tmp_path, monkeypatch: pytest.MonkeyPatch):
    for name in [n for n in sys.modules if n == "torch" or n.startswith("torch.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)  # a comparison needs no torch, and does not look for it
    t1, t2 = write_worldcover_pair(tmp_path / "in")
    out = {name: str(tmp_path / file) for name, file in (
        ("OUTPUT_FROMTO", "fromto.tif"), ("OUTPUT_T1_CLASSES", "t1.tif"), ("OUTPUT_CHANGE", "mask.tif"),
        ("OUTPUT_POLYGONS", "changes.gpkg"), ("OUTPUT_REPORT", "report.html"))}

    results = processing.runAndLoadResults("scd:compareclassifications", {"INPUT_T1": str(t1), "INPUT_T2": str(t2),
                                                                          **out}, feedback=feedback)

    assert results["OUTPUT_REPORT_CSV"] == str(tmp_path / "report.csv")
    layer = layer_named(project, "From-to change")
    renderer = layer.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    labels = {int(c.value): c.label for c in renderer.classes()}
    with rasterio.open(out["OUTPUT_FROMTO"]) as src:
        codes = src.read(1)
        present = {int(v) for v in np.unique(codes) if v != src.nodata}
    assert set(labels) == present  # only the transitions present
    assert "Tree cover -> Built-up" in labels.values()
    a = rasterio.open(t1).read(1)
    b = aligned_t2(t1, t2)
    names, pixels = matrix_block(tmp_path / "report.csv")
    assert names == [WORLDCOVER[c][0] for c in sorted(WORLDCOVER)]
    np.testing.assert_array_equal(pixels, crosstab(a, b, (a != 0) & (b != 0), sorted(WORLDCOVER)))
    assert results["CHANGED_PIXELS"] == int(pixels.sum() - np.trace(pixels))
    polygons = layer_named(project, "Change polygons")  # outlines over the from-to map, which has the legend
    assert isinstance(polygons.renderer(), QgsSingleSymbolRenderer) and polygons.featureCount() > 0
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Land-cover change" in page and "Tree cover -&gt; Built-up" in page
    assert "kept its class" in page and "network" not in page  # the note fits a comparison
    hectares = matrix_block(tmp_path / "report.csv", "hectares")[1]
    format_hectares = importlib.import_module("semantic_change.plugin.report").format_hectares
    tree = '<th class="name">Tree cover</th>' + "".join(f"<td>{format_hectares(v) if v else ''}</td>"
                                                        for v in hectares[0])
    assert tree in page  # the page's matrix is the full cross-tabulation too, persistence on the diagonal
    assert isinstance(layer_named(project, "Land cover of T1").renderer(), QgsPalettedRasterRenderer)
    (line,) = [line for line in feedback.lines if line.startswith("Diagnostics:")]
    assert line.startswith("Diagnostics: QGIS 3.") and "GDAL 3." in line and "rasterio" not in line
    assert "torch" not in line and "CUDA" not in line and "device" not in line


def test_the_layer_palette_names_the_classes_and_a_mapping_harmonises(scd_provider, project, feedback, tmp_path):
    t1 = write_map(tmp_path / "a.tif", np.array([[1, 1, 2, 2]] * 4, dtype=np.uint8), nodata=255)
    t2 = write_map(tmp_path / "b.tif", np.array([[7, 8, 8, 8]] * 4, dtype=np.uint8), nodata=255)
    layer = QgsRasterLayer(str(t1), "my classification")
    classes = [QgsPalettedRasterRenderer.Class(1, QgsPalettedRasterRenderer.Class(1).color, "Forest"),
               QgsPalettedRasterRenderer.Class(2, QgsPalettedRasterRenderer.Class(2).color, "Field")]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes))
    project.addMapLayer(layer)
    mapping = tmp_path / "map.csv"
    mapping.write_text("code,target,name,date\n7,1,,T2\n8,3,Built-up,T2\n", encoding="utf-8")
    results = processing.run("scd:compareclassifications", {
        "INPUT_T1": layer.id(), "INPUT_T2": str(t2), "MAPPING": str(mapping),
        "OUTPUT_FROMTO": str(tmp_path / "f.tif"), "OUTPUT_REPORT": str(tmp_path / "r.html")}, feedback=feedback)
    names, pixels = matrix_block(Path(results["OUTPUT_REPORT_CSV"]))
    assert names == ["Forest", "Field", "Built-up"]
    assert pixels.tolist() == [[4, 0, 4], [0, 0, 8], [0, 0, 0]]


def test_a_float_raster_is_refused_and_nothing_is_written(scd_provider, feedback, tmp_path):
    t1 = write_map(tmp_path / "a.tif", np.ones((8, 8), dtype=np.uint8))
    t2 = write_map(tmp_path / "ndvi.tif", np.ones((8, 8), dtype=np.float32), nodata=None)
    with pytest.raises(QgsProcessingException, match=r"ndvi\.tif\), band 1, holds float32"):
        processing.run("scd:compareclassifications", {"INPUT_T1": str(t1), "INPUT_T2": str(t2),
                                                      "OUTPUT_FROMTO": str(tmp_path / "f.tif")}, feedback=feedback)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "ndvi.tif"]


def test_batch_interface_compares_every_pair_and_styles_every_result(scd_provider, project, batch_dialog, tmp_path):
    pairs = [write_worldcover_pair(tmp_path / f"tile{i}") for i in range(2)]
    move_to_band_2(pairs[0][0])  # the first row's T1 is a stack: its map is band 2
    rows = [{"PARAMETERS": {"INPUT_T1": repr(str(t1)), "INPUT_T2": repr(str(t2)), "BAND_T1": str(band),
                            "BAND_T2": "1", "MIN_AREA": "0"},
             "OUTPUTS": {"OUTPUT_FROMTO": str(tmp_path / f"fromto{i}.tif")}}
            for i, ((t1, t2), band) in enumerate(zip(pairs, (2, 1), strict=True))]
    dialog = batch_dialog("scd:compareclassifications", rows)
    panel = dialog.mainWidget()
    assert panel.batchRowCount() == 2
    panel.checkLoadLayersOnCompletion.setChecked(True)

    dialog.runAlgorithm()

    layers = sorted((lyr for lyr in project.mapLayers().values() if lyr.name().startswith("From-to change")),
                    key=lambda layer: layer.source())
    assert [Path(layer.source()).name for layer in layers] == ["fromto0.tif", "fromto1.tif"]
    for layer in layers:
        assert isinstance(layer.renderer(), QgsPalettedRasterRenderer)
        assert "Tree cover -> Built-up" in {c.label for c in layer.renderer().classes()}
    # two runs on the same pair of inputs are told apart on the map
    assert [layer.name() for layer in layers] == ["From-to change: wc2020 -> wc2021",
                                                  "From-to change: wc2020 -> wc2021 (2)"]
    dialog.close()


def test_graphical_model_compares_and_hands_the_from_to_map_on(scd_provider, project, tmp_path):
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterRasterLayer,
    )

    model = QgsProcessingModelAlgorithm("Land-cover change", "Comparison")
    for name in ("t1", "t2"):
        model.addModelParameter(QgsProcessingParameterRasterLayer(name, name), QgsProcessingModelParameter(name))
    compare = QgsProcessingModelChildAlgorithm("scd:compareclassifications")
    compare.setChildId("compare")
    for name, source in (("INPUT_T1", "t1"), ("INPUT_T2", "t2")):
        compare.addParameterSources(name, [QgsProcessingModelChildParameterSource.fromModelParameter(source)])
    compare.addParameterSources("MIN_AREA", [QgsProcessingModelChildParameterSource.fromStaticValue(0)])
    compare.addParameterSources("BAND_T1", [QgsProcessingModelChildParameterSource.fromStaticValue(2)])
    fromto = QgsProcessingModelOutput("fromto", "From-to change")
    fromto.setChildOutputName("OUTPUT_FROMTO")
    fromto.setChildId("compare")
    compare.setModelOutputs({"fromto": fromto})
    model.addChildAlgorithm(compare)
    report = QgsProcessingModelChildAlgorithm("native:rasterlayeruniquevaluesreport")
    report.setChildId("uniquevalues")
    report.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromChildOutput("compare",
                                                                                                  "OUTPUT_FROMTO")])
    report.addParameterSources("BAND", [QgsProcessingModelChildParameterSource.fromStaticValue(1)])
    table = QgsProcessingModelOutput("transitions", "Transitions found")
    table.setChildOutputName("OUTPUT_TABLE")
    table.setChildId("uniquevalues")
    report.setModelOutputs({"transitions": table})
    model.addChildAlgorithm(report)
    saved = tmp_path / "compare.model3"
    assert model.toFile(str(saved))
    loaded = QgsProcessingModelAlgorithm()
    assert loaded.fromFile(str(saved))
    t1, t2 = move_to_band_2(write_worldcover_pair(tmp_path / "in")[0]), tmp_path / "in" / "wc2021.tif"
    target = tmp_path / "fromto.tif"

    results = processing.run(loaded, {"t1": str(t1), "t2": str(t2), "compare:fromto": str(target),
                                      "uniquevalues:transitions": str(tmp_path / "transitions.gpkg")})

    assert results["compare:fromto"] == str(target)
    with rasterio.open(target) as src:
        codes = src.read(1)
        present = {int(v) for v in np.unique(codes)}
    from qgis.core import QgsVectorLayer

    transitions = QgsVectorLayer(str(tmp_path / "transitions.gpkg"), "t", "ogr")
    assert {int(f["value"]) for f in transitions.getFeatures()} == present - {255}  # nodata is not a value
    with rasterio.open(t1) as src:
        a = src.read(2)
    b = aligned_t2(t1, t2)
    changed = (a != 0) & (b != 0) & (a != b)
    assert len(present - {0, 255}) == len(np.unique(a[changed] * 256 + b[changed]))  # band 2's transitions


def test_the_band_chosen_for_a_stack_is_compared_and_an_unchosen_one_is_reported(
        scd_provider, project, make_feedback, tmp_path):
    t1, t2 = write_worldcover_pair(tmp_path / "in")
    move_to_band_2(t1)
    layer = QgsRasterLayer(str(t1), "stack")
    styled = [QgsPalettedRasterRenderer.Class(10, QgsPalettedRasterRenderer.Class(10).color, "Styled band 1")]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, styled))  # a palette of another band
    project.addMapLayer(layer)
    chosen = make_feedback()
    results = processing.run("scd:compareclassifications", {
        "INPUT_T1": layer.id(), "INPUT_T2": str(t2), "BAND_T1": 2, "OUTPUT_FROMTO": str(tmp_path / "f.tif"),
        "OUTPUT_REPORT": str(tmp_path / "r.html")}, feedback=chosen)
    with rasterio.open(t1) as src:
        a = src.read(2)
    b = aligned_t2(t1, t2)
    names, pixels = matrix_block(Path(results["OUTPUT_REPORT_CSV"]))
    assert names == [WORLDCOVER[c][0] for c in sorted(WORLDCOVER)]  # band 2's own names, not band 1's palette
    np.testing.assert_array_equal(pixels, crosstab(a, b, (a != 0) & (b != 0), sorted(WORLDCOVER)))
    assert "no band was chosen" not in chosen.log
    assert "band 2" in (tmp_path / "r.html").read_text(encoding="utf-8")

    unchosen = make_feedback()
    processing.run("scd:compareclassifications", {"INPUT_T1": str(t1), "INPUT_T2": str(t2),
                                                  "OUTPUT_FROMTO": str(tmp_path / "g.tif")}, feedback=unchosen)
    (warning,) = [line for line in unchosen.lines if "no band was chosen" in line]
    assert "wc2020.tif" in warning and "2 bands" in warning and "band 1 is compared" in warning
    assert "BAND_T1" in warning

    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(QgsProcessingException, match=r"band 3 was requested for T1 \(.*wc2020\.tif\), which has 2 "):
        processing.run("scd:compareclassifications", {"INPUT_T1": str(t1), "INPUT_T2": str(t2), "BAND_T1": 3,
                                                      "OUTPUT_FROMTO": str(tmp_path / "h.tif")},
                       feedback=make_feedback())
    assert sorted(p.name for p in tmp_path.iterdir()) == before
