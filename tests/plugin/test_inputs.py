"""Which layers the dialogs preselect as T1 and T2 (one rule for every algorithm), in a real QGIS (offscreen)."""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import numpy as np
import processing
import pytest
from osgeo import gdal
from qgis.core import QgsApplication, QgsDateTimeRange, QgsRasterLayer
from qgis.PyQt.QtCore import QDateTime

from core.synthetic import write_geotiff

pytestmark = pytest.mark.qgis

PACKAGE = "semantic_change"


@pytest.fixture
def inputs_module(plugin_package):
    return importlib.import_module(f"{PACKAGE}.plugin.inputs")


def defaults(algorithm_id: str) -> list[str | None]:
    """The layer ids the algorithm's dialog would show as T1 and T2."""
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
    return [algorithm.parameterDefinition(name).defaultValue() for name in ("INPUT_T1", "INPUT_T2")]


def layer(project, path: Path, name: str) -> QgsRasterLayer:
    added = QgsRasterLayer(str(path), name)
    assert added.isValid()
    project.addMapLayer(added)  # on top of the layer tree
    return added


def land_cover_map(path: Path) -> Path:
    return write_geotiff(path, np.random.default_rng(1).integers(1, 5, (1, 32, 32), dtype=np.uint8))


def test_a_runs_outputs_are_never_preselected_and_t1_t2_differ(scd_provider, semantic_model, image_pair, project,
                                                               tmp_path):
    """After a run its from-to map was the top layer and became T1 and T2; the comparison took one map twice."""
    older, newer = layer(project, image_pair[0], "t1"), layer(project, image_pair[1], "t2")
    out = {name: str(tmp_path / file) for name, file in (
        ("OUTPUT_FROMTO", "fromto.tif"), ("OUTPUT_T1_CLASSES", "c1.tif"), ("OUTPUT_T2_CLASSES", "c2.tif"),
        ("OUTPUT_CHANGE_PROB", "prob.tif"))}
    processing.runAndLoadResults("scd:semanticchange", {"INPUT_T1": older.id(), "INPUT_T2": newer.id(),
                                                        "MODEL": str(semantic_model), **out})
    top = project.layerTreeRoot().findLayers()[0].layer()
    assert top.name().startswith("From-to change")  # the run's layers are above the images

    for algorithm in ("scd:semanticchange", "scd:binarychange", "scd:compareclassifications"):
        assert defaults(algorithm) == [older.id(), newer.id()], algorithm  # no class map besides ours: the images

    # The same outputs opened from their files (another project, drag and drop) are recognised by their tag.
    project.removeAllMapLayers()
    older, newer = layer(project, image_pair[0], "t1"), layer(project, image_pair[1], "t2")
    for path in out.values():
        layer(project, Path(path), Path(path).stem)  # above the images
    assert defaults("scd:semanticchange") == [older.id(), newer.id()]


def test_the_comparison_prefers_land_cover_maps_and_the_change_algorithms_images(scd_provider, image_pair, project,
                                                                                tmp_path):
    images = [layer(project, path, name) for path, name in zip(image_pair, ("scene 2015", "scene 2021"),
                                                                strict=True)]
    maps = [layer(project, land_cover_map(tmp_path / f"{year}.tif"), f"land cover {year}") for year in (2021, 2015)]
    assert defaults("scd:compareclassifications") == [maps[1].id(), maps[0].id()]  # 2015 below 2021: T1 by year
    assert defaults("scd:semanticchange") == [images[0].id(), images[1].id()]


def test_dates_order_t1_and_t2_whatever_the_layer_order(scd_provider, image_pair, project, tmp_path):
    def copy(source: Path, name: str, **metadata: tuple[str, str]) -> Path:
        target = tmp_path / name
        shutil.copy(source, target)
        dataset = gdal.Open(str(target), gdal.GA_Update)
        for key, (value, domain) in metadata.items():
            dataset.SetMetadataItem(key, value, domain)
        dataset = None
        return target

    # Names: the upper layer is the older image.
    newer = layer(project, image_pair[0], "S2B_MSIL2A_20210704T101029")
    older = layer(project, image_pair[1], "S2A_MSIL2A_20210612T101031")
    assert defaults("scd:semanticchange") == [older.id(), newer.id()]

    # An acquisition date in the metadata comes before a year in the name; TIFFTAG_DATETIME only after the name.
    project.removeAllMapLayers()
    first = layer(project, copy(image_pair[0], "a.tif", ACQUISITIONDATETIME=("2019-05-01T10:00:00Z", "IMAGERY")),
                  "scene 2005")
    second = layer(project, copy(image_pair[1], "b.tif", ACQUISITIONDATETIME=("2003-05-01T10:00:00Z", "IMAGERY")),
                   "scene 2001")
    assert defaults("scd:semanticchange") == [second.id(), first.id()]
    project.removeAllMapLayers()
    lower = layer(project, copy(image_pair[0], "c.tif", TIFFTAG_DATETIME=("2020:01:01 00:00:00", "")), "c")
    upper = layer(project, copy(image_pair[1], "d.tif", TIFFTAG_DATETIME=("2018:01:01 00:00:00", "")), "d")
    assert defaults("scd:semanticchange") == [upper.id(), lower.id()]

    # A date set in QGIS (the layer's temporal properties) comes first of all.
    properties = upper.temporalProperties()
    properties.setIsActive(True)
    properties.setMode(properties.ModeFixedTemporalRange)
    properties.setFixedTemporalRange(QgsDateTimeRange(QDateTime.fromString("2024-06-01", "yyyy-MM-dd"),
                                                      QDateTime.fromString("2024-06-02", "yyyy-MM-dd")))
    assert defaults("scd:semanticchange") == [lower.id(), upper.id()]


def test_two_layers_of_one_file_are_not_a_pair(scd_provider, image_pair, project):
    other = layer(project, image_pair[1], "other image")
    layer(project, image_pair[0], "scene")
    copy = layer(project, image_pair[0], "scene (copy)")  # on top: the same file as "scene"
    assert defaults("scd:semanticchange") == [other.id(), copy.id()]


def test_without_dates_the_lower_layer_is_t1_and_a_basemap_is_never_an_input(scd_provider, image_pair, project):
    basemap = QgsRasterLayer("type=xyz&url=http://localhost:9/%7Bz%7D/%7Bx%7D/%7By%7D.png&zmax=19&zmin=0",
                             "OpenStreetMap", "wms")
    assert basemap.isValid()
    project.addMapLayer(basemap)  # at the bottom, as basemaps are
    older, newer = layer(project, image_pair[0], "t1"), layer(project, image_pair[1], "t2")
    assert defaults("scd:semanticchange") == [older.id(), newer.id()]  # the image added last is on top
    project.removeMapLayer(older.id())
    assert defaults("scd:semanticchange") == [newer.id(), None]  # one image: T1; QGIS picks T2


@pytest.mark.parametrize(("text", "date"), [
    ("scene 1985", (1985,)), ("S2 2020-06", (2020, 6)), ("S2A_MSIL2A_20200615T103031_N0214", (2020, 6, 15)),
    ("2020:06:15 10:30:31", (2020, 6, 15)), ("2019-05-01T10:00:00Z", (2019, 5, 1)), ("t1", None),
    ("EPSG 2056 tile", None), ("run 12020", None), ("x 2020 y 2021", (2020,)),
])
def test_dates_read_from_names_and_metadata(inputs_module, text, date):
    assert inputs_module.parse_date(text) == date
