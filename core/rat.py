"""The raster legend: GDAL colour table, category names and raster attribute table (RAT).

GeoTIFF has no place for category names or a RAT, and its colour maps have no alpha,
so all three go to GDAL's PAM sidecar ``<raster>.aux.xml``, which GDAL, QGIS 3.30+
and ArcGIS read; the ``.qml`` style beside it (:mod:`.qml`) is what QGIS uses. It is
written with GDAL (``osgeo``), like every file of the plugin, inside
:func:`core.io.gdal_session`, so other code sharing the process is unaffected.
See docs/legends.md for the conventions.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .files import aux_path_for
from .io import gdal_session
from .legend import SQUARE_METRES_PER_HECTARE, LegendEntry, sorted_entries
from .qml import write_paletted_style

#: Columns of the raster attribute table, in order.
RAT_COLUMNS = ("Value", "From", "To", "Label", "Red", "Green", "Blue", "Alpha", "Count", "Area_ha")

_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class LegendFiles:
    """What :func:`write_legend` wrote.

    Attributes:
        raster: The styled raster.
        aux_xml: The PAM sidecar holding category names and the RAT, or None if
            GDAL did not write one.
        qml: The QGIS style beside the raster.
        warnings: Problems that left the legend incomplete, for the engine to pass
            to the user; empty when everything was written and read back.
    """

    raster: Path
    aux_xml: Path | None
    qml: Path
    warnings: tuple[str, ...] = ()



def _build_rat(gdal: Any, entries: Sequence[LegendEntry], stats: Mapping[int, tuple[int, float]] | None) -> Any:
    rat = gdal.RasterAttributeTable()
    columns: list[tuple[str, int, int]] = [
        ("Value", gdal.GFT_Integer, gdal.GFU_MinMax),
        ("From", gdal.GFT_String, gdal.GFU_Generic),
        ("To", gdal.GFT_String, gdal.GFU_Generic),
        ("Label", gdal.GFT_String, gdal.GFU_Name),
        ("Red", gdal.GFT_Integer, gdal.GFU_Red),
        ("Green", gdal.GFT_Integer, gdal.GFU_Green),
        ("Blue", gdal.GFT_Integer, gdal.GFU_Blue),
        ("Alpha", gdal.GFT_Integer, gdal.GFU_Alpha),
    ]
    if stats is not None:
        counts = [int(stats.get(e.value, (0, 0.0))[0]) for e in entries]
        # GDAL RAT integers are 32-bit; a very large scene's counts go in a real column.
        count_type = gdal.GFT_Integer if max(counts, default=0) <= _INT32_MAX else gdal.GFT_Real
        columns += [("Count", count_type, gdal.GFU_PixelCount), ("Area_ha", gdal.GFT_Real, gdal.GFU_Generic)]
    for name, field_type, usage in columns:
        rat.CreateColumn(name, field_type, usage)
    rat.SetRowCount(len(entries))
    for row, e in enumerate(entries):
        rat.SetValueAsInt(row, 0, e.value)
        rat.SetValueAsString(row, 1, e.from_class or "")
        rat.SetValueAsString(row, 2, e.to_class or "")
        rat.SetValueAsString(row, 3, e.label)
        for col, channel in enumerate((*e.color, e.alpha), start=4):
            rat.SetValueAsInt(row, col, int(channel))
        if stats is not None:
            count, area_m2 = stats.get(e.value, (0, 0.0))
            if count_type == gdal.GFT_Integer:
                rat.SetValueAsInt(row, 8, int(count))
            else:
                rat.SetValueAsDouble(row, 8, float(count))
            rat.SetValueAsDouble(row, 9, float(area_m2) / SQUARE_METRES_PER_HECTARE)
    if hasattr(rat, "SetTableType"):
        rat.SetTableType(gdal.GRTT_THEMATIC)
    return rat


def write_legend(
    raster_path: str | os.PathLike[str],
    entries: Sequence[LegendEntry],
    *,
    stats: Mapping[int, tuple[int, float]] | None = None,
    embed_color_table: bool = False,
    keep_existing_aux: bool = False,
) -> LegendFiles:
    """Attach a legend to a finished single-band uint8/uint16/uint32 GeoTIFF.

    Writes the colour table, category names and a thematic RAT through GDAL, then a
    paletted ``.qml`` beside the raster, and reads the result back with a fresh open
    to confirm it. The raster's pixels are not touched; only the TIFF colour map tag
    (``embed_color_table``) and the sidecars change.

    Args:
        raster_path: The finished GeoTIFF: at its final name, or at a temporary name
            whose ``.aux.xml`` and ``.qml`` (see :func:`aux_path_for`,
            :func:`qml_path_for`) the caller then moves along with it.
        entries: The legend, e.g. from :func:`fromto_legend`.
        stats: ``value -> (pixel count, area in m²)`` (see
            :meth:`core.encode.CodeCounter.stats`); adds ``Count`` and ``Area_ha`` RAT
            columns. Values missing from it count as 0.
        embed_color_table: False (default) stores the colour table, with alpha, in
            the ``.aux.xml`` sidecar beside the category names and RAT, so "No change"
            and unused values are transparent for every GDAL reader (GDAL 3.4.1+
            prefers a sidecar colour table to one inside the file). True stores it in
            the GeoTIFF itself, where the colours survive the file being copied alone
            but alpha is lost (TIFF colour maps have none; "No change" then reads as
            opaque white wherever the ``.qml`` is not used).
        keep_existing_aux: By default an ``.aux.xml`` already beside the raster is
            deleted first: the engine renames a fresh raster over any previous output,
            so such a sidecar describes old data (statistics, a stale table).

    Returns:
        The files written and any warnings (e.g. GDAL could not write the sidecar).

    Raises:
        ValueError: If an entry's value does not fit the raster's data type.
    """
    raster = Path(raster_path)
    ordered = sorted_entries(entries)
    aux = aux_path_for(raster)
    if not keep_existing_aux:
        aux.unlink(missing_ok=True)
    warnings: list[str] = []
    max_value = ordered[-1].value
    with gdal_session() as gdal:
        flags = gdal.OF_RASTER | (gdal.OF_UPDATE if embed_color_table else gdal.OF_READONLY)
        ds = gdal.OpenEx(str(raster), flags)
        try:
            band = ds.GetRasterBand(1)
            limits = {gdal.GDT_Byte: 255, gdal.GDT_UInt16: 65535, gdal.GDT_UInt32: 2**32 - 1}
            if band.DataType not in limits:
                raise ValueError(f"{raster.name}: legends need a uint8, uint16 or uint32 raster, "
                                 f"not {gdal.GetDataTypeName(band.DataType)}")
            if max_value > limits[band.DataType]:
                raise ValueError(f"{raster.name}: legend value {max_value} does not fit "
                                 f"{gdal.GetDataTypeName(band.DataType)}")
            # Colour tables and category names are lists indexed by value: fine up to 16 bits. A uint32
            # from-to raster (a comparison of more than 255 classes) is described by its RAT and .qml alone.
            listed = band.DataType != gdal.GDT_UInt32
            by_value = {e.value: e for e in ordered}
            if listed:
                table = gdal.ColorTable()
                size = 256 if band.DataType == gdal.GDT_Byte else max_value + 1
                for value in range(size):
                    e = by_value.get(value)
                    table.SetColorEntry(value, (*e.color, e.alpha) if e else (0, 0, 0, 0))
                band.SetColorTable(table)
                if not embed_color_table:
                    band.SetColorInterpretation(gdal.GCI_PaletteIndex)
                band.SetCategoryNames([by_value[v].label if v in by_value else "" for v in range(max_value + 1)])
            band.SetDefaultRAT(_build_rat(gdal, ordered, stats))
            ds.FlushCache()
        finally:
            ds = None  # closing writes the TIFF tags and the .aux.xml

        check = gdal.Open(str(raster))
        band = check.GetRasterBand(1)
        # Order matters: GDAL 3.6's GTiff loads the .aux.xml lazily, and GetCategoryNames()
        # alone does not trigger it (it returns None as the first call on a fresh open).
        rat = band.GetDefaultRAT()
        stored = band.GetColorTable()
        names = band.GetCategoryNames() or []
        channels = 3 if embed_color_table else 4  # TIFF colour maps have no alpha
        if listed and (stored is None or any(
            tuple(stored.GetColorEntry(e.value)[:channels]) != (*e.color, e.alpha)[:channels] for e in ordered
        )):
            warnings.append(f"{raster.name}: GDAL did not keep the colour table as written "
                            "(GDAL before 3.4.1 lets one inside the GeoTIFF override the .aux.xml)")
        if listed and (len(names) <= max_value or names[max_value] != by_value[max_value].label):
            warnings.append(f"{raster.name}: GDAL did not keep the category names")
        if rat is None or rat.GetRowCount() != len(ordered):
            warnings.append(f"{raster.name}: GDAL did not keep the attribute table (is {aux.parent} writable?)")
        check = None

    qml = write_paletted_style(raster, ordered)
    return LegendFiles(raster, aux if aux.exists() else None, qml, tuple(warnings))

