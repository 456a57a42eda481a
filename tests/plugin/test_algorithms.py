"""The algorithms run through Processing in a real QGIS: outputs, legends, styling, log and refusals."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import processing
import pytest
import rasterio
import rasterio.warp
from osgeo import gdal, ogr
from qgis.core import (
    QgsApplication,
    QgsCategorizedSymbolRenderer,
    QgsPalettedRasterRenderer,
    QgsProcessingException,
    QgsProcessingOutputLayerDefinition,
    QgsProject,
    QgsRasterLayer,
    QgsSingleBandPseudoColorRenderer,
    QgsSingleSymbolRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import Qt

from core.colors import PROBABILITY_RAMP
from core.encode import NODATA_UINT8, fromto_pairs
from core.legend import binary_legend, fromto_legend
from core.models.card import SECOND_CLASSES
from core.postprocess import polygonize_changes

pytestmark = pytest.mark.qgis

N = len(SECOND_CLASSES)
LEGEND = {e.value: e for e in fromto_legend(SECOND_CLASSES)}


def inputs(pair: tuple[Path, Path], model: Path, **extra: object) -> dict[str, object]:
    return {"INPUT_T1": str(pair[0]), "INPUT_T2": str(pair[1]), "MODEL": str(model), **extra}


def layer_named(project: QgsProject, prefix: str) -> QgsRasterLayer | QgsVectorLayer:
    (layer,) = [lyr for lyr in project.mapLayers().values() if lyr.name().startswith(prefix)]
    return layer


def read(path: str | Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def palette(layer: QgsRasterLayer) -> dict[int, tuple[str, int]]:
    renderer = layer.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    return {int(c.value): (c.label, c.color.alpha()) for c in renderer.classes()}


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_semantic_change_puts_styled_layers_on_the_map(scd_provider, semantic_model, image_pair, project, feedback,
                                                       tmp_path):
    out = {name: str(tmp_path / file) for name, file in (
        ("OUTPUT_FROMTO", "fromto.tif"), ("OUTPUT_T1_CLASSES", "t1.tif"), ("OUTPUT_T2_CLASSES", "t2.tif"),
        ("OUTPUT_CHANGE_PROB", "prob.tif"), ("OUTPUT_POLYGONS", "changes.gpkg"), ("OUTPUT_REPORT", "report.html"))}

    # 64 px tiles (the model's own size, below the 256 px default) so that the 96 px pair is cut into 4 tiles
    results = processing.runAndLoadResults("scd:semanticchange", inputs(image_pair, semantic_model, TILE_SIZE=64,
                                                                        **out), feedback=feedback)

    for name, path in out.items():
        assert results[name] == path and Path(path).exists()
    assert results["OUTPUT_REPORT_CSV"] == str(tmp_path / "report.csv")
    codes = read(out["OUTPUT_FROMTO"])
    valid = codes != NODATA_UINT8
    assert valid.all()  # both dates cover the whole area
    present = {int(v) for v in np.unique(codes)}
    assert results["CHANGED_PIXELS"] == int((codes > 0).sum())
    assert results["CHANGED_AREA_M2"] == pytest.approx((codes > 0).sum() * 1.0)
    assert results["DEVICE_USED"] == "cpu"

    # The from-to layer: a paletted renderer listing exactly the transitions present, "No change" transparent.
    fromto = layer_named(project, "From-to change")
    assert fromto.name() == "From-to change: t1 -> t2"
    classes = palette(fromto)
    assert set(classes) == present | {0}
    assert classes[0] == ("No change", 0)
    for value in present - {0}:
        label, alpha = classes[value]
        from_class, to_class = (int(c) for c in fromto_pairs(value, N))
        assert label == LEGEND[value].label and alpha == 255
        if from_class != to_class:
            assert label == f"{SECOND_CLASSES[from_class - 1].name} -> {SECOND_CLASSES[to_class - 1].name}"

    # Class maps: the dataset palette; probability: the fixed ramp.
    t1_classes = palette(layer_named(project, "Land cover of T1"))
    assert [t1_classes[i][0] for i in range(1, N + 1)] == [c.name for c in SECOND_CLASSES]
    assert t1_classes[0] == ("No change", 0)
    assert set(palette(layer_named(project, "Land cover of T2"))) == set(t1_classes)
    prob = layer_named(project, "Change probability").renderer()
    assert isinstance(prob, QgsSingleBandPseudoColorRenderer)
    assert (prob.classificationMin(), prob.classificationMax()) == (0.0, 1.0)
    items = prob.shader().rasterShaderFunction().colorRampItemList()
    assert [(i.value, i.color.getRgb()[:3]) for i in items] == [(v, c) for v, c in PROBABILITY_RAMP]

    # Class maps hold classes only inside change.
    t1 = read(out["OUTPUT_T1_CLASSES"])
    assert ((t1 > 0) == (codes > 0)).all()

    # Polygons: one per patch, with the transition's names. The from-to map below names every colour, so the
    # polygons are one outline symbol: each transition is in the layer panel once, with a filled swatch.
    polygons = layer_named(project, "Change polygons")
    assert isinstance(polygons.renderer(), QgsSingleSymbolRenderer)
    assert polygons.renderer().symbol().symbolLayer(0).brushStyle() == Qt.NoBrush
    assert {f.name() for f in polygons.fields()} >= {"value", "from_class", "to_class", "label", "area_m2"}
    features = list(polygons.getFeatures())
    assert sum(f["area_m2"] for f in features) == pytest.approx(results["CHANGED_AREA_M2"])
    assert {f["value"] for f in features} == present - {0}
    assert {f["label"] for f in features} == {LEGEND[v].label for v in present - {0}}

    # The layer panel: the shown layers' legends open, the hidden ones' (a ramp, every class) collapsed.
    nodes = {node.name().split(":")[0]: node for node in project.layerTreeRoot().findLayers()}
    assert {name: (node.isVisible(), node.isExpanded()) for name, node in nodes.items()} == {
        "Change polygons": (True, True), "From-to change": (True, True), "Change probability": (False, False),
        "Land cover of T2 (inside change)": (False, False), "Land cover of T1 (inside change)": (False, False)}

    # Report: HTML with a chart, and the CSV beside it.
    page = Path(out["OUTPUT_REPORT"]).read_text(encoding="utf-8")
    assert "<svg" in page and "Transition matrix" in page and "only meaningful inside" in page
    rows = list(csv.reader(Path(results["OUTPUT_REPORT_CSV"]).read_text(encoding="utf-8").splitlines()))
    assert rows[0] == ["unit", "from", *[c.name for c in SECOND_CLASSES], "total"]

    # The log: diagnostics, device, memory estimate, tiles and time.
    log = feedback.log
    assert "Diagnostics: QGIS 3." in log and "Python 3." in log and "torch 2." in log and "GDAL 3." in log
    assert "CUDA" in log and "device found: cpu" in log
    assert "estimated memory" in log and "4 tiles" in log
    (summary,) = [line for line in feedback.lines if line.startswith("summary:")]
    assert summary.startswith("summary: device cpu; estimated memory") and summary.endswith(" s")


def test_results_go_on_top_in_a_group_per_run(scd_provider, semantic_model, image_pair, project, tmp_path):
    """The inputs are in the project and T2 is active: each run's results still land on top, in order."""
    for path in image_pair:
        project.addMapLayer(QgsRasterLayer(str(path), path.stem))
    for run in (1, 2):
        out = {name: str(tmp_path / f"{run}-{file}") for name, file in (
            ("OUTPUT_FROMTO", "fromto.tif"), ("OUTPUT_T2_CLASSES", "t2.tif"), ("OUTPUT_CHANGE_PROB", "prob.tif"),
            ("OUTPUT_POLYGONS", "changes.gpkg"))}
        processing.runAndLoadResults("scd:semanticchange", inputs(image_pair, semantic_model, **out))

    root = project.layerTreeRoot()
    groups = [child.name() for child in root.children() if child.nodeType() == child.NodeGroup]
    assert groups == ["Change t1 -> t2 (2)", "Change t1 -> t2"]
    assert root.children()[0].name() == "Change t1 -> t2 (2)"  # the newest run above everything
    for group, suffix in ((root.findGroup("Change t1 -> t2"), ""), (root.findGroup("Change t1 -> t2 (2)"), " (2)")):
        layers = [(node.name(), node.isVisible()) for node in group.findLayers()]
        assert layers == [(f"Change polygons: t1 -> t2{suffix}", True), (f"From-to change: t1 -> t2{suffix}", True),
                          (f"Change probability: t1 -> t2{suffix}", False),
                          (f"Land cover of T2 (inside change): t1 -> t2{suffix}", False)]
    polygons = root.findGroup("Change t1 -> t2").findLayers()[0].layer()
    assert isinstance(polygons.renderer(), QgsSingleSymbolRenderer)  # outlines over the from-to map


def test_polygons_loaded_without_their_map_carry_its_legend(scd_provider, semantic_model, image_pair, project,
                                                            feedback, tmp_path):
    """Only the polygons are opened (the map's "open output file" unticked): their categories are the legend."""
    from processing.gui.Postprocessing import handleAlgorithmResults
    from processing.tools import dataobjects

    context = dataobjects.createContext(feedback)
    parameters = inputs(image_pair, semantic_model, OUTPUT_FROMTO=str(tmp_path / "fromto.tif"),
                        OUTPUT_POLYGONS=QgsProcessingOutputLayerDefinition(str(tmp_path / "changes.gpkg"),
                                                                           context.project()))
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("scd:semanticchange")
    processing.run(algorithm, parameters, context=context, feedback=feedback)
    handleAlgorithmResults(algorithm, context, feedback)

    (polygons,) = project.mapLayers().values()
    present = {int(v) for v in np.unique(read(tmp_path / "fromto.tif"))} - {0}
    renderer = polygons.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer)
    categories = {c.value(): (c.label(), c.symbol().symbolLayer(0).brushStyle(), c.symbol().color().getRgb()[:3])
                  for c in renderer.categories()}
    assert categories == {v: (LEGEND[v].label, Qt.SolidPattern, LEGEND[v].color) for v in present}


def test_the_same_image_for_both_dates_is_refused(scd_provider, semantic_model, image_pair, project, tmp_path):
    first = QgsRasterLayer(str(image_pair[0]), "scene 2019")
    again = QgsRasterLayer(str(image_pair[0]), "scene 2019 (copy)")
    project.addMapLayers([first, again])
    for t2, said in ((first, "the same layer 'scene 2019'"), (again, "the same image")):
        with pytest.raises(QgsProcessingException, match="T1 and T2 are " + re.escape(said)):
            processing.run("scd:semanticchange", {"INPUT_T1": first.id(), "INPUT_T2": t2.id(),
                                                  "MODEL": str(semantic_model),
                                                  "OUTPUT_FROMTO": str(tmp_path / "fromto.tif")})
    assert not (tmp_path / "fromto.tif").exists()


def four_band_copy(source: Path, target: Path, descriptions: tuple[str, ...]) -> Path:
    """``source`` with a fourth band, every band described as a Landsat export describes them."""
    with rasterio.open(source) as src:
        data, profile = src.read(), src.profile
    profile.update(count=4, photometric="MINISBLACK")
    with rasterio.open(target, "w", **profile) as dst:
        dst.write(np.concatenate([data, data[:1]]))
        for band, description in enumerate(descriptions, start=1):
            dst.set_band_description(band, description)
    return target


def test_bands_are_logged_and_contradictions_and_untrained_models_flagged(scd_provider, semantic_model, image_pair,
                                                                         make_feedback, tmp_path):
    landsat = four_band_copy(image_pair[0], tmp_path / "landsat.tif", ("SWIR1", "NIR", "Red", "Green"))
    feedback = make_feedback()
    processing.run("scd:semanticchange", inputs((landsat, image_pair[1]), semantic_model,
                                                OUTPUT_FROMTO=str(tmp_path / "fromto.tif"),
                                                OUTPUT_REPORT=str(tmp_path / "report.html")), feedback=feedback)

    assert "T1 bands used, in the model's order: 1 ('SWIR1', colour Gray), 2 ('NIR', colour Undefined)" in \
        feedback.log
    assert "T2 bands used, in the model's order: 1 (no description, colour Red), 2 (no description, colour Green)" \
        in feedback.log
    band_warnings = [w for w in feedback.warnings if w.startswith("T1:")]
    assert len(band_warnings) == 3 and "should be red, but band 1 ('SWIR1'" in band_warnings[0]
    assert "looks like infrared" in band_warnings[0] and "'Bands of T1'" in band_warnings[0]
    assert not [w for w in feedback.warnings if w.startswith("T2:")]  # a plain RGB file matches the model
    (untrained,) = [w for w in feedback.warnings if "untrained" in w]
    assert "random" in untrained and "noise" in untrained
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "is untrained" in page and "looks like infrared" in page and "UNTRAINED" in page
    assert "WGS 84 / UTM zone 33N (EPSG:32633)" in page and "1 x 1 m" in page


def test_a_model_of_four_bands_runs_on_four_bands_and_refuses_three_naming_both_counts(
        scd_provider, image_pair, make_feedback, tmp_path):
    """NAIP-like imagery (red, green, blue, near infrared) with a four-band model file; the band parameters take
    any number of bands, and a choice of another count is refused before anything is written."""
    import dataclasses as dc

    import torch

    from core.models.card import PRESETS
    from core.models.checkpoint import make_card, save_checkpoint
    from core.models.registry import build_model

    preset = dc.replace(PRESETS["second"], mean_t1=(110.0,) * 4, std_t1=(50.0,) * 4, mean_t2=(110.0,) * 4,
                        std_t2=(50.0,) * 4)
    card = make_card("gapl_scd", preset, options={"backbone": "resnet18"}, tile_size=64, bands=(1, 2, 3, 4))
    described = [["Red", "red"], ["Green", "green"], ["Blue", "blue"], ["B8 NIR", "undefined"]]  # as prepare records
    card = dc.replace(card, training={"data": {"band_descriptions": {"t1": described, "t2": described}}})
    torch.manual_seed(0)
    model = tmp_path / "naip-4band.pt"
    save_checkpoint(model, build_model("gapl_scd", **card.options), card)
    four = [four_band_copy(path, tmp_path / f"naip-{n}.tif", ("Red", "Green", "Blue", "NIR"))
            for n, path in enumerate(image_pair, start=1)]
    target = tmp_path / "fromto.tif"
    feedback = make_feedback()
    processing.run("scd:semanticchange", inputs(four, model, OUTPUT_FROMTO=str(target)), feedback=feedback)
    assert read(target).shape == (96, 96)
    assert "T1 bands used, in the model's order: 1 ('Red', colour Gray), 2 ('Green'" in feedback.log
    assert "4 ('NIR', colour Undefined)" in feedback.log
    assert not [w for w in feedback.warnings if w.startswith(("T1:", "T2:"))]
    # the bands in another order than the model learned them: flagged against what it learned
    feedback = make_feedback()
    processing.run("scd:semanticchange", inputs(four, model, BANDS_T1=[4, 1, 2, 3], OUTPUT_FROMTO=str(target),
                                                ), feedback=feedback)
    (swapped, *_) = [w for w in feedback.warnings if w.startswith("T1:")]
    assert "input band 1 of the model should be red, but band 4 ('NIR'" in swapped and "looks like infrared" in swapped
    assert "model's order (red, green, blue, infrared)" in swapped

    refused = tmp_path / "refused.tif"
    with pytest.raises(QgsProcessingException,
                       match=r"the model takes 4 bands per date but 3 were chosen for T1 \(.*naip-1\.tif\)"):
        processing.run("scd:semanticchange", inputs(four, model, BANDS_T1=[1, 2, 3], BANDS_T2=[1, 2, 3],
                                                    OUTPUT_FROMTO=str(refused)))
    with pytest.raises(QgsProcessingException, match=r"band 4 was requested for T1 \(.*\), which has 3 bands"):
        processing.run("scd:semanticchange", inputs(image_pair, model, OUTPUT_FROMTO=str(refused)))
    assert not refused.exists()


def test_legend_travels_with_the_file(scd_provider, semantic_model, image_pair, tmp_path):
    """Outside QGIS too (other GIS, qgis_process): colour table, category names and a .qml beside the raster."""
    target = tmp_path / "fromto.tif"
    processing.run("scd:semanticchange", inputs(image_pair, semantic_model, OUTPUT_FROMTO=str(target)))
    dataset = gdal.Open(str(target))
    band = dataset.GetRasterBand(1)
    band.GetDefaultRAT()  # GDAL 3.6 reads the .aux.xml lazily
    names = band.GetCategoryNames()
    assert names[0] == "No change" and names[1 + 4 * N + 2] == "Building -> Low vegetation"
    assert (tmp_path / "fromto.qml").exists()
    assert files_in(tmp_path) == ["fromto.qml", "fromto.tif", "fromto.tif.aux.xml"]


@pytest.mark.parametrize("model_fixture", ["binary_model", "semantic_model"])
def test_binary_change_with_either_kind_of_model(request, scd_provider, image_pair, project, tmp_path,
                                                 model_fixture):
    model = request.getfixturevalue(model_fixture)
    out = {"OUTPUT_CHANGE": str(tmp_path / "change.tif"), "OUTPUT_CHANGE_PROB": str(tmp_path / "prob.tif"),
           "OUTPUT_POLYGONS": str(tmp_path / "change.shp")}

    results = processing.runAndLoadResults("scd:binarychange", inputs(image_pair, model, **out))

    mask = read(results["OUTPUT_CHANGE"])
    assert set(np.unique(mask)) <= {0, 1}
    assert palette(layer_named(project, "Change mask")) == {0: ("No change", 0), 1: ("Change", 255)}
    polygons = layer_named(project, "Change polygons")
    dataset = ogr.Open(out["OUTPUT_POLYGONS"])
    assert polygons.featureCount() == dataset.GetLayer(0).GetFeatureCount()
    assert all(f["label"] == "Change" for f in polygons.getFeatures())
    assert isinstance(layer_named(project, "Change probability").renderer(), QgsSingleBandPseudoColorRenderer)


def test_model_information(scd_provider, semantic_model, binary_model, feedback, tmp_path):
    report = tmp_path / "model.html"
    results = processing.run("scd:modelinfo", {"MODEL": str(semantic_model), "OUTPUT_HTML": str(report)},
                             feedback=feedback)
    assert results["TASK"] == "semantic" and results["NETWORK"] == "gapl_scd"
    assert results["CLASSES"] == ", ".join(c.name for c in SECOND_CLASSES)
    assert results["NUM_CLASSES"] == N and results["TILE_SIZE"] == 64
    assert results["BANDS_T1"] == "1, 2, 3" and results["DATASET"] == "untrained"
    assert "Building (#800000)" in feedback.log and "Semantic change (from-to)" in feedback.log
    assert "Diagnostics:" in feedback.log
    assert "Low vegetation" in report.read_text(encoding="utf-8")

    binary = processing.run("scd:modelinfo", {"MODEL": str(binary_model), "OUTPUT_HTML": None})
    assert binary["TASK"] == "binary" and binary["NUM_CLASSES"] == 0 and "OUTPUT_HTML" not in binary


def test_model_information_says_when_the_training_imagery_was_resized(scd_provider, semantic_model, feedback,
                                                                      tmp_path):
    from core.models.card import TrainingResize
    from core.models.checkpoint import load_checkpoint, save_checkpoint

    model, card = load_checkpoint(semantic_model)
    resized = tmp_path / "landsat-resized.pt"
    save_checkpoint(resized, model, dataclasses.replace(card, training_resize=TrainingResize(416, 416, 512)))
    processing.run("scd:modelinfo", {"MODEL": str(semantic_model), "OUTPUT_HTML": None}, feedback=feedback)
    assert "Resized training imagery" not in feedback.log
    processing.run("scd:modelinfo", {"MODEL": str(resized), "OUTPUT_HTML": None}, feedback=feedback)
    assert "Resized training imagery: 416 x 416 px tiles resized to 512 x 512 px (x1.231)" in feedback.log


# --- refusals: the engine's message reaches the user, and nothing is left behind ---------------


def run_expecting_error(algorithm: str, parameters: dict[str, object], folder: Path, project: QgsProject) -> str:
    before = files_in(folder)
    with pytest.raises(QgsProcessingException) as error:
        processing.runAndLoadResults(algorithm, parameters)
    assert files_in(folder) == before
    assert not project.mapLayers()
    return str(error.value)


def test_semantic_change_refuses_a_binary_model(scd_provider, binary_model, image_pair, project, tmp_path):
    message = run_expecting_error(
        "scd:semanticchange", inputs(image_pair, binary_model, OUTPUT_FROMTO=str(tmp_path / "f.tif")), tmp_path,
        project)
    assert "binary change model" in message and "scd:binarychange" in message


@pytest.mark.parametrize(("change", "expected"), [
    ({"BANDS_T1": [1, 2, 5]}, "band 5 was requested for T1"),
    ({"MODEL": "__missing__"}, "model file not found"),
    ({"MODEL": "__garbage__"}, "is not a PyTorch model file"),
    ({"TILE_SIZE": 16}, "tile size 16 is out of range"),
    ({"OUTPUT_FROMTO": "__png__"}, "give a file name ending in .tif"),
    ({"OUTPUT_POLYGONS": "__xyz__"}, "no vector format"),
])
def test_engine_refusals_reach_the_user(scd_provider, semantic_model, image_pair, project, tmp_path, change,
                                        expected):
    garbage = tmp_path.parent / f"{tmp_path.name}-garbage.pt"
    garbage.write_bytes(b"not a model at all")
    special = {"__missing__": str(tmp_path / "nope.pt"), "__garbage__": str(garbage),
               "__png__": str(tmp_path / "f.png"), "__xyz__": str(tmp_path / "p.xyz")}
    change = {k: special.get(v, v) if isinstance(v, str) else v for k, v in change.items()}
    parameters = inputs(image_pair, semantic_model, OUTPUT_FROMTO=str(tmp_path / "f.tif"),
                        OUTPUT_CHANGE_PROB=str(tmp_path / "p.tif"))
    parameters.update(change)
    assert expected in run_expecting_error("scd:semanticchange", parameters, tmp_path, project)


def test_cancel_stops_and_leaves_nothing(scd_provider, semantic_model, image_pair, project, make_feedback, tmp_path):
    feedback = make_feedback(cancel_at=0.0)  # cancels at the first progress report
    before = files_in(tmp_path)
    parameters = inputs(image_pair, semantic_model, OUTPUT_FROMTO=str(tmp_path / "f.tif"),
                        OUTPUT_POLYGONS=str(tmp_path / "p.gpkg"), BATCH_SIZE=1)
    # No error (a cancel is no failure) and no results: nothing for QGIS to load or to miss.
    assert processing.runAndLoadResults("scd:semanticchange", parameters, feedback=feedback) == {}
    assert "cancelled by the user; no output was written" in feedback.log
    assert "done:" not in feedback.log  # stopped after the first of four batches, not at the end
    assert files_in(tmp_path) == before
    assert not project.mapLayers()


def test_web_layers_are_refused_clearly(scd_provider, semantic_model, image_pair, project, tmp_path):
    web = QgsRasterLayer("type=xyz&url=http://localhost:9/%7Bz%7D/%7Bx%7D/%7By%7D.png&zmax=19&zmin=0", "tiles", "wms")
    assert web.isValid()
    project.addMapLayer(web)
    parameters = inputs(image_pair, semantic_model, INPUT_T2=web.id(), OUTPUT_FROMTO=str(tmp_path / "f.tif"))
    with pytest.raises(QgsProcessingException, match=r"T2: layer 'tiles' is a web layer \(wms provider\)"):
        processing.run("scd:semanticchange", parameters)
    assert files_in(tmp_path) == []


def test_layers_that_are_not_plain_files_are_read_through_gdal_or_qgis(scd_provider, semantic_model, image_pair,
                                                                       project, feedback, tmp_path):
    # A raster table inside a GeoPackage: a GDAL connection string, read through a VRT.
    gpkg = tmp_path / "dates.gpkg"
    gdal.Translate(str(gpkg), str(image_pair[0]), format="GPKG", creationOptions=["RASTER_TABLE=t1"])
    table = QgsRasterLayer(f"GPKG:{gpkg}:t1", "t1 in a GeoPackage", "gdal")
    assert table.isValid() and not Path(table.source()).is_file()
    # A virtual raster (a QGIS provider, no file at all), read through QGIS into a temporary GeoTIFF.
    uri = (f"?crs=EPSG:32633&extent=500000,4999904,500096,5000000&width=96&height=96"
           f"&formula=%22t2%401%22&t2:uri={image_pair[1]}&t2:provider=gdal")
    virtual = QgsRasterLayer(uri, "virtual t2", "virtualraster")
    assert virtual.isValid() and virtual.bandCount() == 1
    project.addMapLayers([table, virtual])
    target = tmp_path / "fromto.tif"

    processing.run("scd:semanticchange", {
        "INPUT_T1": table.id(), "INPUT_T2": virtual.id(), "MODEL": str(semantic_model), "BANDS_T2": [1, 1, 1],
        "OUTPUT_FROMTO": str(target)}, feedback=feedback)

    assert read(target).shape == (96, 96)
    assert "reading layer 'virtual t2' (virtualraster provider) through QGIS" in feedback.log
    assert not any(p.name.startswith("scd-inputs-") for p in tmp_path.iterdir())


def test_minimum_change_patch(scd_provider, semantic_model, image_pair, feedback, tmp_path):
    plain, sieved = tmp_path / "plain.tif", tmp_path / "sieved.tif"
    processing.run("scd:semanticchange", inputs(image_pair, semantic_model, OUTPUT_FROMTO=str(plain)))
    results = processing.run("scd:semanticchange", inputs(image_pair, semantic_model, OUTPUT_FROMTO=str(sieved),
                                                           MIN_AREA=20), feedback=feedback)
    before, after = read(plain), read(sieved)
    assert ((after == 0) | (after == before)).all()  # only removals
    assert (after > 0).sum() < (before > 0).sum()
    assert results["CHANGED_PIXELS"] == int((after > 0).sum())
    assert "minimum mapping unit 20 px" in feedback.log
    # Every 8-connected patch of change that is left has at least 20 px (1 m pixels: 20 m²).
    mask = tmp_path / "mask.tif"
    with rasterio.open(sieved) as src:
        profile = src.profile
    with rasterio.open(mask, "w", **profile) as dst:
        dst.write((after > 0).astype(np.uint8), 1)
    polygonize_changes(mask, tmp_path / "patches.gpkg", binary_legend(), connectedness=8)
    dataset = ogr.Open(str(tmp_path / "patches.gpkg"))
    areas = [f.GetField("area_m2") for f in dataset.GetLayer(0)]
    assert areas and min(areas) >= 20


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="int8 needs ONNX Runtime's quantiser")
def test_int8_runs_where_it_pays_and_keeps_the_labels_and_says_so(scd_provider, plugin_package, semantic_model,
                                                                 image_pair, feedback, tmp_path, monkeypatch):
    engine = importlib.import_module(f"{plugin_package.__name__}.core.engine")  # the engine QGIS runs
    check = importlib.import_module(f"{plugin_package.__name__}.core.backends.check")
    full, short, refused, quantised = (tmp_path / f"{name}.tif" for name in ("full", "short", "refused", "int8"))
    processing.run("scd:semanticchange", inputs(image_pair, semantic_model, OUTPUT_FROMTO=str(full), BACKEND=1,
                                                INT8=False))
    # by default int8 is tried only where it pays: the test scene is a run of a few batches
    processing.run("scd:semanticchange", inputs(image_pair, semantic_model, OUTPUT_FROMTO=str(short)),
                   feedback=feedback)
    assert re.search(r"int8 not used \(auto: a run of \d+ batches is too short", feedback.log)
    assert (read(short) == read(full)).all()
    # as if the scene were large and the CPU had fast int8; the test model is untrained, so int8 moves more
    # of its labels than the check allows, and the run says so
    monkeypatch.setattr(engine, "AUTO_MEASURE_BATCHES", 1)
    monkeypatch.setattr(engine, "cpu_has_fast_int8", lambda: True)
    processing.run("scd:semanticchange", inputs(image_pair, semantic_model, OUTPUT_FROMTO=str(refused),
                                                OUTPUT_REPORT=str(tmp_path / "refused.html")), feedback=feedback)
    assert re.search(r"int8 kept [0-9.]+ % of fp32's labels .*: running without int8", feedback.log)
    assert "ran without int8" in (tmp_path / "refused.html").read_text(encoding="utf-8")
    monkeypatch.setattr(check, "INT8_MIN_AGREEMENT", 0.0)
    processing.run("scd:semanticchange", inputs(image_pair, semantic_model, OUTPUT_FROMTO=str(quantised),
                                                OUTPUT_REPORT=str(tmp_path / "report.html")), feedback=feedback)
    assert re.search(r"backend: (onnxruntime|openvino) int8 ", feedback.log)
    report = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert " int8 (" in report and "int8 kept " in report
    assert (read(quantised) == read(full)).mean() > 0.9  # an untrained model: many pixels sit near a boundary


def test_html_output_is_announced_only_after_a_run_that_wrote_the_report(scd_provider, semantic_model, image_pair,
                                                                         tmp_path):
    from qgis.core import QgsApplication

    dialog_algorithm = QgsApplication.processingRegistry().createAlgorithmById("scd:semanticchange")
    processing.run("scd:semanticchange", inputs(image_pair, semantic_model, OUTPUT_FROMTO=str(tmp_path / "a.tif"),
                                                OUTPUT_REPORT=str(tmp_path / "a.html")))
    assert dialog_algorithm.hasHtmlOutputs()
    processing.run("scd:semanticchange", inputs(image_pair, semantic_model, OUTPUT_FROMTO=str(tmp_path / "b.tif")))
    assert not dialog_algorithm.hasHtmlOutputs()
    with pytest.raises(QgsProcessingException):
        processing.run("scd:semanticchange", inputs(image_pair, tmp_path / "missing.pt",
                                                    OUTPUT_FROMTO=str(tmp_path / "c.tif"),
                                                    OUTPUT_REPORT=str(tmp_path / "c.html")))
    assert not dialog_algorithm.hasHtmlOutputs()


def test_progress_moves_within_a_single_batch(scd_provider, semantic_model, image_pair, feedback, tmp_path):
    """The pair is 4 tiles, one batch of 4: the bar still moves while it is read, run and written."""
    processing.run("scd:semanticchange", inputs(image_pair, semantic_model, TILE_SIZE=64, BATCH_SIZE=4, MIN_AREA=0,
                                                OUTPUT_FROMTO=str(tmp_path / "fromto.tif")), feedback=feedback)
    assert "1 tiles" not in feedback.log and "batch 4" in feedback.log
    steps = sorted(set(feedback.progress))
    assert steps[-1] == 100.0
    assert len([value for value in steps if 0.0 < value < 100.0]) >= 2, steps  # read, network
    assert feedback.progress == sorted(feedback.progress)  # never backwards


def test_processing_extent_and_mask_layer(scd_provider, semantic_model, image_pair, feedback, tmp_path):
    with rasterio.open(image_pair[0]) as src:
        transform, crs = src.transform, src.crs.to_string()
    (x0, y0), (x1, y1) = transform * (8, 8), transform * (72, 56)  # columns 8-71, rows 8-55
    extent = f"{x0},{x1},{y1},{y0} [{crs}]"
    part = tmp_path / "part.tif"
    processing.run("scd:semanticchange", inputs(image_pair, semantic_model, EXTENT=extent, MIN_AREA=0,
                                                OUTPUT_FROMTO=str(part)), feedback=feedback)
    with rasterio.open(part) as dst:
        assert (dst.width, dst.height) == (64, 48) and dst.transform.c == x0 and dst.transform.f == y0
    assert "processing area limited to: extent" in feedback.log

    # A mask in another CRS (WGS 84): the run covers its extent, pixels outside its polygon are nodata.
    (mx0, my0), (mx1, my1) = transform * (16, 16), transform * (48, 40)
    xs, ys = rasterio.warp.transform(crs, "EPSG:4326", [mx0, mx1, mx1, mx0], [my0, my0, my1, my0])
    mask = tmp_path / "mask.geojson"
    mask.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {},
        "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in zip(xs, ys, strict=True)]]}}]}))
    masked = tmp_path / "masked.tif"
    processing.run("scd:semanticchange", inputs(image_pair, semantic_model, MASK=str(mask), MIN_AREA=0,
                                                OUTPUT_FROMTO=str(masked)))
    with rasterio.open(masked) as dst:
        codes = dst.read(1)
    assert abs(codes.shape[1] - 32) <= 1 and abs(codes.shape[0] - 24) <= 1
    # the triangle's upper-right half (top-left, top-right, bottom-right corners) holds data
    assert codes[1, -2] != NODATA_UINT8 and codes[-2, 1] == NODATA_UINT8


def _mask_file(folder: Path, crs: str, geometry: dict) -> Path:
    path = folder / "mask.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": crs}},
                                "features": [{"type": "Feature", "properties": {}, "geometry": geometry}]}))
    return path


def test_an_extent_or_mask_that_cannot_limit_the_area_is_refused_naming_it(scd_provider, semantic_model, image_pair,
                                                                           tmp_path):
    with rasterio.open(image_pair[0]) as src:
        transform, crs = src.transform, src.crs.to_string()
    (x0, y0), (x1, y1) = transform * (8, 8), transform * (72, 56)
    out = tmp_path / "fromto.tif"

    def refused(**area: object) -> str:
        with pytest.raises(QgsProcessingException) as error:
            processing.run("scd:semanticchange", inputs(image_pair, semantic_model, MIN_AREA=0,
                                                        OUTPUT_FROMTO=str(out), **area))
        assert not out.exists()
        return str(error.value)

    # a NaN extent used to be dropped: the whole scene ran
    assert "the processing extent (EXTENT) (nan, nan, nan, nan) is not a number" in refused(
        EXTENT=f"nan,nan,nan,nan [{crs}]")
    far = [[x0 + 100_000, y0], [x1 + 100_000, y0], [x1 + 100_000, y1], [x0 + 100_000, y0]]  # 100 km east
    said = refused(MASK=str(_mask_file(tmp_path, crs, {"type": "Polygon", "coordinates": [far]})))
    assert "the mask layer mask (1 polygon within" in said and "does not overlap the processing area" in said
    assert "processing extent" not in said  # the user gave no extent
    point = {"type": "Point", "coordinates": [x0 + 10, y0 - 10]}
    assert "the mask layer mask: feature 1 is a Point geometry; a mask is polygons" in refused(
        MASK=str(_mask_file(tmp_path, crs, point)))
    inside = [[x0, y0], [x1, y0], [x1, y1], [x0, y0]]
    mask = _mask_file(tmp_path, crs, {"type": "Polygon", "coordinates": [inside]})
    (ex0, ey0), (ex1, ey1) = transform * (80, 60), transform * (90, 70)  # beside the mask, inside T1
    assert "does not overlap the processing area" in refused(MASK=str(mask), EXTENT=f"{ex0},{ex1},{ey1},{ey0} [{crs}]")
