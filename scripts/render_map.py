"""Render a from-to map as QGIS draws it: over a background image, with its legend and a scale bar.

A PyQGIS script (no qgis_process, no desktop): it loads the from-to raster with the style the plugin
wrote beside it (``<name>.qml``, the same palette and "Low vegetation -> Building" labels the plugin
gives the layer in QGIS desktop), puts it over the background image in a print layout with a title,
a legend of the classes present in the map and a scale bar, and exports the layout as a PNG.

    .venv/bin/python scripts/render_map.py --fromto fromto.tif --background t2.tif --out map.png
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path


def nice_segment(length: float) -> float:
    """The largest 1, 2 or 5 times a power of ten not above ``length`` (a scale bar segment)."""
    power = 10 ** math.floor(math.log10(max(length, 1e-9)))
    return max(step * power for step in (1, 2, 5) if step * power <= length)


def values_present(path: Path) -> set[int]:
    """The pixel values of band 1 outside nodata."""
    import numpy as np
    from osgeo import gdal

    dataset = gdal.Open(str(path))  # kept alive while its band is read
    band = dataset.GetRasterBand(1)
    values = np.unique(band.ReadAsArray())
    nodata = band.GetNoDataValue()
    return {int(v) for v in values if nodata is None or v != nodata}


def render(fromto: Path, background: Path, out: Path, *, title: str, width_mm: float = 260.0,
           dpi: int = 96) -> Path:
    """Write ``out`` (PNG) and return it; raises ``RuntimeError`` naming the layer QGIS could not read."""
    from qgis.core import (
        QgsLayoutExporter,
        QgsLayoutItemLabel,
        QgsLayoutItemLegend,
        QgsLayoutItemMap,
        QgsLayoutItemScaleBar,
        QgsLayoutPoint,
        QgsLayoutSize,
        QgsLegendRenderer,
        QgsLegendStyle,
        QgsMapLayerLegendUtils,
        QgsPrintLayout,
        QgsProject,
        QgsRasterLayer,
        QgsUnitTypes,
    )
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtGui import QFont

    project = QgsProject.instance()
    project.clear()
    change = QgsRasterLayer(str(fromto), "From-to change")
    image = QgsRasterLayer(str(background), "T2 image")
    for layer, path in ((change, fromto), (image, background)):
        if not layer.isValid():
            raise RuntimeError(f"QGIS cannot read {path}")
    style = fromto.with_suffix(".qml")
    if style.exists():
        message, ok = change.loadNamedStyle(str(style))
        if not ok:
            raise RuntimeError(f"QGIS cannot apply the style {style}: {message}")
    project.setCrs(change.crs())
    project.addMapLayers([change, image])

    height_mm = width_mm * 0.62
    layout = QgsPrintLayout(project)
    layout.initializeDefaults()
    page = layout.pageCollection().page(0)
    page.setPageSize(QgsLayoutSize(width_mm, height_mm, QgsUnitTypes.LayoutMillimeters))

    label = QgsLayoutItemLabel(layout)
    label.setText(title)
    label.setFont(QFont("DejaVu Sans", 13))
    label.attemptMove(QgsLayoutPoint(6, 4, QgsUnitTypes.LayoutMillimeters))
    label.attemptResize(QgsLayoutSize(width_mm - 12, 10, QgsUnitTypes.LayoutMillimeters))
    layout.addLayoutItem(label)

    map_size = height_mm - 32
    map_item = QgsLayoutItemMap(layout)
    map_item.setRect(0, 0, map_size, map_size)
    layout.addLayoutItem(map_item)
    map_item.attemptMove(QgsLayoutPoint(6, 15, QgsUnitTypes.LayoutMillimeters))
    map_item.attemptResize(QgsLayoutSize(map_size, map_size, QgsUnitTypes.LayoutMillimeters))
    map_item.setCrs(change.crs())
    map_item.setLayers([change, image])  # top first
    map_item.setExtent(change.extent())
    map_item.setFrameEnabled(True)

    legend = QgsLayoutItemLegend(layout)
    legend.setTitle("What became what (T1 -> T2)")
    legend.setLinkedMap(map_item)
    legend.setAutoUpdateModel(False)
    root = legend.model().rootGroup()
    root.removeAllChildren()
    node = root.addLayer(change)
    QgsLegendRenderer.setNodeLegendStyle(node, QgsLegendStyle.Hidden)  # the legend's title names it
    # Only the transitions the map holds, in the palette's order (QGIS 3.22's own filter by map content
    # does not apply to an exported raster legend); no "No change" (it is drawn transparent) and no
    # "Band 1 (Palette)" caption.
    entries = legend.model().layerLegendNodes(node)
    offset = 0 if not entries or entries[0].data(Qt.DecorationRole) else 1
    present = values_present(fromto)
    shown_classes = [offset + index for index, item in enumerate(change.renderer().classes())
                     if item.value in present and item.value != 0]
    QgsMapLayerLegendUtils.setLegendNodeOrder(node, shown_classes)
    legend.model().refreshLayerLegend(node)
    legend.setColumnCount(1)
    legend.setStyleFont(QgsLegendStyle.Title, QFont("DejaVu Sans", 11))
    legend.setStyleFont(QgsLegendStyle.SymbolLabel, QFont("DejaVu Sans", 8))
    legend.attemptMove(QgsLayoutPoint(map_size + 12, 15, QgsUnitTypes.LayoutMillimeters))
    layout.addLayoutItem(legend)

    scale_bar = QgsLayoutItemScaleBar(layout)
    scale_bar.setStyle("Single Box")
    scale_bar.setLinkedMap(map_item)
    scale_bar.setUnits(QgsUnitTypes.DistanceMeters)
    scale_bar.setNumberOfSegments(2)
    scale_bar.setNumberOfSegmentsLeft(0)
    scale_bar.setUnitsPerSegment(nice_segment(change.extent().width() / 4))
    scale_bar.setUnitLabel("m")
    layout.addLayoutItem(scale_bar)
    scale_bar.attemptMove(QgsLayoutPoint(6, 15 + map_size + 3, QgsUnitTypes.LayoutMillimeters))
    scale_bar.update()

    legend.adjustBoxSize()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.stem + ".partial.png")
    settings = QgsLayoutExporter.ImageExportSettings()
    settings.dpi = dpi
    result = QgsLayoutExporter(layout).exportToImage(str(partial), settings)
    if result != QgsLayoutExporter.Success:
        raise RuntimeError(f"QGIS could not export the layout to {partial} (code {result})")
    partial.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fromto", type=Path, required=True, help="from-to GeoTIFF written by the plugin")
    parser.add_argument("--background", type=Path, required=True, help="image drawn under it (e.g. T2)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--title", default="Semantic change: demo model trained on synthetic data",
                        help="title above the map")
    parser.add_argument("--dpi", type=int, default=96, help="resolution of the PNG (default 96)")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qgis.core import QgsApplication

    QgsApplication.setPrefixPath(os.environ.get("QGIS_PREFIX_PATH", "/usr"), True)
    app = QgsApplication([], False)
    app.initQgis()
    try:
        print(render(args.fromto, args.background, args.out, title=args.title, dpi=args.dpi))
    except RuntimeError as error:
        print(f"render_map: {error}", file=sys.stderr)
        return 1
    finally:
        app.exitQgis()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
