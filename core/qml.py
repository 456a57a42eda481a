"""QGIS layer styles (``.qml``) for the outputs: paletted for categories, a fixed ramp for probability.

QGIS loads ``<raster base name>.qml`` automatically when a layer is added, so every
consumer of the files (not only this plugin) sees the same colours and labels.
Categorical and probability rasters alike are drawn with nearest-neighbour
resampling, never smoothed. The styles declare QGIS 3.22, the oldest version the
plugin supports.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from .colors import PROBABILITY_RAMP, RGB
from .files import atomic_write_text, qml_path_for
from .legend import LegendEntry, sorted_entries

#: QGIS version the styles declare; 3.22 is the oldest the plugin supports.
QML_VERSION = "3.22.0-Białowieża"

_QML_DOCTYPE = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"


def _qml_root() -> tuple[ET.Element, ET.Element]:
    root = ET.Element("qgis", {
        "version": QML_VERSION, "styleCategories": "AllStyleCategories",
        "hasScaleBasedVisibilityFlag": "0", "minScale": "1e+08", "maxScale": "0",
    })
    pipe = ET.SubElement(root, "pipe")
    provider = ET.SubElement(pipe, "provider")
    # Categorical and probability rasters alike must not be smoothed when zoomed.
    ET.SubElement(provider, "resampling", {
        "enabled": "false", "maxOversampling": "2",
        "zoomedInResamplingMethod": "nearestNeighbour", "zoomedOutResamplingMethod": "nearestNeighbour",
    })
    return root, pipe


def _min_max_origin(parent: ET.Element) -> None:
    origin = ET.SubElement(parent, "minMaxOrigin")
    for tag, text in (("limits", "None"), ("extent", "WholeRaster"), ("statAccuracy", "Estimated"),
                      ("cumulativeCutLower", "0.02"), ("cumulativeCutUpper", "0.98"), ("stdDevFactor", "2")):
        ET.SubElement(origin, tag).text = text


def _finish_qml(root: ET.Element, pipe: ET.Element) -> str:
    ET.SubElement(pipe, "brightnesscontrast", {"brightness": "0", "contrast": "0", "gamma": "1"})
    ET.SubElement(pipe, "huesaturation", {
        "saturation": "0", "grayscaleMode": "0", "colorizeOn": "0", "colorizeRed": "255",
        "colorizeGreen": "128", "colorizeBlue": "128", "colorizeStrength": "100",
    })
    ET.SubElement(pipe, "rasterresampler", {"maxOversampling": "2"})
    ET.SubElement(pipe, "resamplingStage").text = "resamplingFilter"
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    return _QML_DOCTYPE + ET.tostring(root, encoding="unicode") + "\n"


#: Characters XML 1.0 cannot hold at all, not even escaped (control characters other than tab and line breaks).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: str) -> str:
    """``text`` with characters XML cannot hold shown as ``\\xNN``, so a ``.qml`` always stays well-formed."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def paletted_qml(entries: Sequence[LegendEntry]) -> str:
    """QGIS paletted-renderer style (QGIS 3.22+) with one palette entry per legend entry."""
    root, pipe = _qml_root()
    renderer = ET.SubElement(pipe, "rasterrenderer", {
        "type": "paletted", "band": "1", "opacity": "1", "alphaBand": "-1", "nodataColor": "",
    })
    ET.SubElement(renderer, "rasterTransparency")
    _min_max_origin(renderer)
    palette = ET.SubElement(renderer, "colorPalette")
    for e in sorted_entries(entries):
        ET.SubElement(palette, "paletteEntry", {
            "value": str(e.value), "color": e.hex_color, "alpha": str(e.alpha), "label": xml_safe(e.label),
        })
    ET.SubElement(renderer, "colorramp", {"type": "randomcolors", "name": "[source]"})
    return _finish_qml(root, pipe)



def probability_qml() -> str:
    """QGIS single-band pseudocolour style: change probability 0..1 on a fixed ramp.

    The range is fixed (not stretched to the data) so two runs look comparable.
    """
    root, pipe = _qml_root()
    renderer = ET.SubElement(pipe, "rasterrenderer", {
        "type": "singlebandpseudocolor", "band": "1", "opacity": "1", "alphaBand": "-1",
        "classificationMin": "0", "classificationMax": "1", "nodataColor": "",
    })
    ET.SubElement(renderer, "rasterTransparency")
    _min_max_origin(renderer)
    shader = ET.SubElement(ET.SubElement(renderer, "rastershader"), "colorrampshader", {
        "colorRampType": "INTERPOLATED", "classificationMode": "1", "clip": "0",
        "minimumValue": "0", "maximumValue": "1", "labelPrecision": "2",
    })
    ramp = ET.SubElement(shader, "colorramp", {"type": "gradient", "name": "[source]"})
    options = ET.SubElement(ramp, "Option", {"type": "Map"})

    def option(name: str, value: str) -> None:
        ET.SubElement(options, "Option", {"type": "QString", "name": name, "value": value})

    def rgba(c: RGB) -> str:
        return f"{c[0]},{c[1]},{c[2]},255"

    option("color1", rgba(PROBABILITY_RAMP[0][1]))
    option("color2", rgba(PROBABILITY_RAMP[-1][1]))
    option("discrete", "0")
    option("rampType", "gradient")
    option("stops", ":".join(f"{v:g};{rgba(c)}" for v, c in PROBABILITY_RAMP[1:-1]))
    for value, color in PROBABILITY_RAMP:
        ET.SubElement(shader, "item", {
            "value": f"{value:g}", "color": "#{:02x}{:02x}{:02x}".format(*color), "alpha": "255",
            "label": f"{value:.2f}",
        })
    return _finish_qml(root, pipe)


def write_probability_style(raster_path: str | os.PathLike[str]) -> Path:
    """Write :func:`probability_qml` beside a change-probability raster; returns the ``.qml`` path."""
    return atomic_write_text(qml_path_for(raster_path), probability_qml())



def write_paletted_style(raster_path: str | os.PathLike[str], entries: Sequence[LegendEntry]) -> Path:
    """Write :func:`paletted_qml` beside a categorical raster; returns the ``.qml`` path."""
    return atomic_write_text(qml_path_for(raster_path), paletted_qml(entries))
