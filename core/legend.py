"""Legends for the categorical outputs, written the three ways GIS software reads them.

A from-to raster is only useful if every consumer shows "Water -> Building" rather
than a grey number (peers-and-conventions 3.4). So each finished categorical GeoTIFF
gets:

* a GDAL colour table with alpha, category names and a thematic raster attribute
  table (RAT) with labels, colours, alpha, pixel counts and areas, all in the PAM
  sidecar ``<raster>.aux.xml`` (GeoTIFF has no place for names or RATs, and its
  colour maps have no alpha; GDAL, QGIS 3.30+ and ArcGIS read the sidecar). The
  colour table can instead be embedded in the GeoTIFF, without alpha;
* a ``<raster base name>.qml`` paletted style, which QGIS loads automatically when the
  layer is added, with "No change" transparent.

Labels use an ASCII arrow (``" -> "``) so every GDAL, QGIS and CSV consumer shows
them unmangled. The from-x-to transition matrix is written as CSV, and as rows the
plugin renders as HTML.

Nothing here imports QGIS; GDAL (``osgeo``) is used only because rasterio cannot write
RATs. GDAL's exception mode is switched on only for the duration of each call and
then restored, so other code sharing the process (QGIS, other plugins) is unaffected.
"""

from __future__ import annotations

import colorsys
import csv
import io
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .encode import NO_CHANGE, TransitionCounter, fromto_code

if TYPE_CHECKING:
    from .models.card import LandCoverClass

RGB = tuple[int, int, int]

#: Separator of the two classes in a transition label (ASCII on purpose).
ARROW = " -> "
#: Colour stored for "No change" where a consumer ignores alpha.
NO_CHANGE_COLOR: RGB = (255, 255, 255)
#: QGIS version the styles declare; 3.22 is the oldest the plugin supports.
QML_VERSION = "3.22.0-Białowieża"

SQUARE_METRES_PER_HECTARE = 10_000.0

#: Columns of the raster attribute table, in order.
RAT_COLUMNS = ("Value", "From", "To", "Label", "Red", "Green", "Blue", "Alpha", "Count", "Area_ha")

_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class LegendEntry:
    """One value of a categorical raster and how to show it.

    Attributes:
        value: Pixel value.
        label: Text for legends, category names and tables.
        color: Display colour.
        alpha: 0 (transparent) to 255 (opaque); "No change" is 0 so change stands
            out over imagery.
        from_class, to_class: Class names of a from-to code; None elsewhere.
    """

    value: int
    label: str
    color: RGB
    alpha: int = 255
    from_class: str | None = None
    to_class: str | None = None

    def __post_init__(self) -> None:
        # Palettes read from JSON arrive as lists; a tuple keeps entries hashable and comparable.
        object.__setattr__(self, "color", tuple(int(c) for c in self.color))
        if self.value < 0:
            raise ValueError(f"legend values must be non-negative, got {self.value}")
        if len(self.color) != 3 or not all(0 <= c <= 255 for c in self.color):
            raise ValueError(f"colour must be three values in 0..255, got {self.color}")
        if not 0 <= self.alpha <= 255:
            raise ValueError(f"alpha must be in 0..255, got {self.alpha}")

    @property
    def hex_color(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.color)


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


def no_change_entry() -> LegendEntry:
    """Value 0 of every categorical output, transparent."""
    return LegendEntry(0, NO_CHANGE, NO_CHANGE_COLOR, alpha=0)


def transition_label(from_name: str, to_name: str) -> str:
    """Label of a transition; a same-class pair is a change whose class is unresolved."""
    if from_name == to_name:
        return f"Changed ({from_name}, class unresolved)"
    return f"{from_name}{ARROW}{to_name}"


# --- Colours ---------------------------------------------------------------------------------

def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65) of 0..255 sRGB colours, to measure how different two colours look."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], -1)


def _hls_to_rgb(h: float, lightness: float, s: float) -> RGB:
    r, g, b = colorsys.hls_to_rgb(h % 1.0, lightness, s)
    return round(r * 255), round(g * 255), round(b * 255)


def _shades(color: RGB) -> list[RGB]:
    """Candidate colours of the same family: small hue shifts, any lightness, less saturation."""
    h, _, s = colorsys.rgb_to_hls(*(c / 255.0 for c in color))
    out = {
        _hls_to_rgb(h + dh, 0.15 + 0.025 * i, s * sf)
        for dh in (-0.03, 0.0, 0.03)
        for sf in (1.0, 0.75, 0.5)
        for i in range(29)
    }
    return sorted(out)


def _pastel(color: RGB) -> RGB:
    """Washed-out class colour for "changed, class unresolved": visibly a weaker statement."""
    r, g, b = (round(0.4 * c + 0.6 * 235) for c in color)
    return r, g, b


@lru_cache(maxsize=16)
def _transition_colors(colors: tuple[RGB, ...]) -> dict[tuple[int, int], RGB]:
    """Colour of every (from, to) pair of 0-based class indices.

    Each transition takes a shade of its "to" class colour, so the map reads as "what
    it became"; the shades of one column differ by the "from" class. Shades are
    picked greedily to be as far as possible (in CIE L*a*b*) from every colour already
    used, with a mild pull towards the class colour so a column stays one family;
    within a column they are then ordered dark to light by "from" class, so the
    legend reads regularly. Same-class pairs get a pastel of the class colour.
    """
    n = len(colors)
    result: dict[tuple[int, int], RGB] = {(t, t): _pastel(colors[t]) for t in range(n)}
    for t in range(n):
        candidates = np.array(_shades(colors[t]))
        cand_lab = _srgb_to_lab(candidates)
        pull = np.linalg.norm(cand_lab - _srgb_to_lab(np.array(colors[t])), axis=-1)
        picks: list[RGB] = []
        for _ in range(n - 1):
            used = _srgb_to_lab(np.array([*result.values(), *picks]))
            spread = np.linalg.norm(cand_lab[:, None, :] - used[None, :, :], axis=-1).min(axis=1)
            best = candidates[int(np.argmax(spread - 0.2 * pull))]
            picks.append((int(best[0]), int(best[1]), int(best[2])))
        picks.sort(key=lambda c: colorsys.rgb_to_hls(*(x / 255.0 for x in c))[1])
        sources = [f for f in range(n) if f != t]
        result.update({(f, t): c for f, c in zip(sources, picks, strict=True)})
    return result


# --- Legends ---------------------------------------------------------------------------------

def fromto_legend(classes: Sequence[LandCoverClass]) -> list[LegendEntry]:
    """Legend of a from-to raster: 0 "No change" (transparent), then codes ``1..N*N``.

    Codes follow :func:`core.encode.fromto_codes`; labels read "Water -> Building", and
    same-class codes "Changed (Water, class unresolved)".
    """
    if not classes:
        raise ValueError("a from-to legend needs at least one land-cover class")
    n = len(classes)
    colors = _transition_colors(tuple((int(r), int(g), int(b)) for r, g, b in (c.color for c in classes)))
    entries = [no_change_entry()]
    for f, src in enumerate(classes):
        for t, dst in enumerate(classes):
            entries.append(LegendEntry(
                fromto_code(f + 1, t + 1, n), transition_label(src.name, dst.name), colors[(f, t)],
                from_class=src.name, to_class=dst.name,
            ))
    return entries


def class_legend(classes: Sequence[LandCoverClass]) -> list[LegendEntry]:
    """Legend of a per-date class raster: 0 "No change" (transparent), 1..N the dataset palette."""
    return [no_change_entry()] + [
        LegendEntry(i, c.name, c.color) for i, c in enumerate(classes, start=1)
    ]


def binary_legend(change_color: RGB = (255, 0, 0)) -> list[LegendEntry]:
    """Legend of a binary change mask: 0 "No change" (transparent), 1 "Change"."""
    return [no_change_entry(), LegendEntry(1, "Change", change_color)]


# --- File writing helpers --------------------------------------------------------------------

def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) beside ``path`` and rename it into place, so readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def gdal_session() -> Iterator[Any]:
    """GDAL with exceptions on and PAM enabled for this thread, both restored afterwards.

    PAM is forced on because the RAT and category names of a GeoTIFF can only live in
    the ``.aux.xml`` sidecar; the setting is thread-local so nothing else changes.
    """
    from osgeo import gdal

    old_pam = gdal.GetThreadLocalConfigOption("GDAL_PAM_ENABLED", None)
    gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", "YES")
    try:
        manager = getattr(gdal, "ExceptionMgr", None)  # GDAL >= 3.7
        if manager is not None:
            with manager(useExceptions=True):
                yield gdal
        else:
            was_on = gdal.GetUseExceptions()
            gdal.UseExceptions()
            try:
                yield gdal
            finally:
                if not was_on:
                    gdal.DontUseExceptions()
    finally:
        gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", old_pam)


def qml_path_for(raster_path: str | os.PathLike[str]) -> Path:
    """The style QGIS loads automatically for a raster: same name, ``.qml`` suffix."""
    return Path(raster_path).with_suffix(".qml")


def aux_path_for(raster_path: str | os.PathLike[str]) -> Path:
    """GDAL's PAM sidecar of a raster."""
    path = Path(raster_path)
    return path.with_name(path.name + ".aux.xml")


def _check_entries(entries: Sequence[LegendEntry]) -> list[LegendEntry]:
    if not entries:
        raise ValueError("a legend needs at least one entry")
    ordered = sorted(entries, key=lambda e: e.value)
    values = [e.value for e in ordered]
    if len(set(values)) != len(values):
        raise ValueError("legend values must be unique")
    return ordered


# --- Raster legend ---------------------------------------------------------------------------

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
    """Attach a legend to a finished single-band uint8/uint16 GeoTIFF.

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
    ordered = _check_entries(entries)
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
            if band.DataType not in (gdal.GDT_Byte, gdal.GDT_UInt16):
                raise ValueError(f"{raster.name}: legends need a uint8 or uint16 raster, "
                                 f"not {gdal.GetDataTypeName(band.DataType)}")
            if max_value > (255 if band.DataType == gdal.GDT_Byte else 65535):
                raise ValueError(f"{raster.name}: legend value {max_value} does not fit "
                                 f"{gdal.GetDataTypeName(band.DataType)}")
            table = gdal.ColorTable()
            size = 256 if band.DataType == gdal.GDT_Byte else max_value + 1
            by_value = {e.value: e for e in ordered}
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
        if stored is None or any(
            tuple(stored.GetColorEntry(e.value)[:channels]) != (*e.color, e.alpha)[:channels] for e in ordered
        ):
            warnings.append(f"{raster.name}: GDAL did not keep the colour table as written "
                            "(GDAL before 3.4.1 lets one inside the GeoTIFF override the .aux.xml)")
        if len(names) <= max_value or names[max_value] != by_value[max_value].label:
            warnings.append(f"{raster.name}: GDAL did not keep the category names")
        if rat is None or rat.GetRowCount() != len(ordered):
            warnings.append(f"{raster.name}: GDAL did not keep the attribute table (is {aux.parent} writable?)")
        check = None

    qml = qml_path_for(raster)
    _atomic_write_text(qml, paletted_qml(ordered))
    return LegendFiles(raster, aux if aux.exists() else None, qml, tuple(warnings))


# --- QGIS styles -----------------------------------------------------------------------------

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
    for e in _check_entries(entries):
        ET.SubElement(palette, "paletteEntry", {
            "value": str(e.value), "color": e.hex_color, "alpha": str(e.alpha), "label": xml_safe(e.label),
        })
    ET.SubElement(renderer, "colorramp", {"type": "randomcolors", "name": "[source]"})
    return _finish_qml(root, pipe)


#: Change-probability ramp (ColorBrewer YlOrRd): pale where unlikely, deep red where certain.
PROBABILITY_RAMP: tuple[tuple[float, RGB], ...] = (
    (0.0, (255, 255, 178)),
    (0.25, (254, 204, 92)),
    (0.5, (253, 141, 60)),
    (0.75, (240, 59, 32)),
    (1.0, (189, 0, 38)),
)


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
    qml = qml_path_for(raster_path)
    _atomic_write_text(qml, probability_qml())
    return qml


# --- Transition matrix -----------------------------------------------------------------------

def _check_counter(classes: Sequence[LandCoverClass], counter: TransitionCounter) -> None:
    if counter.num_classes != len(classes):
        raise ValueError(f"counter has {counter.num_classes} classes but {len(classes)} class names were given")


def _format_ha(area_m2: float) -> str:
    return f"{area_m2 / SQUARE_METRES_PER_HECTARE:.6f}"


def transition_matrix_csv(classes: Sequence[LandCoverClass], counter: TransitionCounter) -> str:
    """The text :func:`write_transition_matrix` writes."""
    _check_counter(classes, counter)
    names = [c.name for c in classes]
    blocks = (
        ("pixels", counter.pixel_matrix(), counter.unchanged_pixels, str),
        ("hectares", counter.area_matrix_m2(), counter.unchanged_area_m2, _format_ha),
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["unit", "from", *names, "total"])
    blank = [""] * len(names)
    for unit, matrix, unchanged, fmt in blocks:
        for name, row in zip(names, matrix, strict=True):
            writer.writerow([unit, name, *(fmt(v) for v in row), fmt(row.sum())])
        changed = matrix.sum()
        writer.writerow([unit, "Total changed", *(fmt(v) for v in matrix.sum(axis=0)), fmt(changed)])
        writer.writerow([unit, NO_CHANGE, *blank, fmt(unchanged)])
        writer.writerow([unit, "All valid pixels", *blank, fmt(changed + unchanged)])
    return buffer.getvalue()


def write_transition_matrix(
    csv_path: str | os.PathLike[str], classes: Sequence[LandCoverClass], counter: TransitionCounter
) -> Path:
    """Write the from x to transition matrix as one rectangular UTF-8 CSV.

    Layout (one table, so spreadsheets and ``pandas.read_csv`` load it as is; filter
    on ``unit`` to get one block)::

        unit,from,<to class 1>,...,<to class N>,total
        pixels,<from class 1>,<count>,...,<row total>
        ...                                   (one row per "from" class)
        pixels,Total changed,<column totals>,<all changed>
        pixels,No change,,...,<unchanged pixels>
        pixels,All valid pixels,,...,<changed + unchanged>
        hectares,...                          (the same rows, areas in ha, 6 decimals)

    Rows are "from" (first date), columns "to" (second date). The diagonal holds
    changed pixels whose class did not change ("class unresolved"); unchanged pixels
    have no class and appear only in the "No change" row.

    Returns:
        ``csv_path``.
    """
    path = Path(csv_path)
    _atomic_write_text(path, transition_matrix_csv(classes, counter))
    return path


def transition_table_rows(
    classes: Sequence[LandCoverClass], counter: TransitionCounter, *, include_empty: bool = False
) -> list[dict[str, Any]]:
    """One dict per from-to code, for the plugin's HTML summary.

    Keys: ``value`` (code), ``from``, ``to`` (class names; None for "No change"),
    ``label`` (as in the legend), ``pixels``, ``area_ha``. The "No change" row comes
    first; transitions follow in code order, those with no pixels left out unless
    ``include_empty``.
    """
    _check_counter(classes, counter)
    rows = []
    for e in fromto_legend(classes):
        pixels = counter.count(e.value)
        if pixels == 0 and e.value != 0 and not include_empty:
            continue
        rows.append({
            "value": e.value, "from": e.from_class, "to": e.to_class, "label": e.label,
            "pixels": pixels, "area_ha": counter.area_m2(e.value) / SQUARE_METRES_PER_HECTARE,
        })
    return rows
