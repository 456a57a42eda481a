"""QGIS styles beside the rasters."""

import xml.etree.ElementTree as ET

import numpy as np
from helpers import make_raster

from core.qml import write_probability_style


def parse_qml(path):
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE qgis")
    return ET.fromstring(text)


def test_probability_style(tmp_path):
    path = make_raster(tmp_path / "prob.tif", np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4), -1.0)
    qml = write_probability_style(path)
    assert qml == tmp_path / "prob.qml"
    renderer = parse_qml(qml).find("pipe/rasterrenderer")
    assert renderer.get("type") == "singlebandpseudocolor"
    assert (renderer.get("classificationMin"), renderer.get("classificationMax")) == ("0", "1")
    shader = renderer.find("rastershader/colorrampshader")
    assert shader.get("colorRampType") == "INTERPOLATED"
    values = [float(i.get("value")) for i in shader.findall("item")]
    assert values[0] == 0.0 and values[-1] == 1.0 and values == sorted(values)


# --- Transition matrix -----------------------------------------------------------------------
