"""Class names and colours of existing land-cover maps, and the tables that harmonise two legends.

Comparing two land-cover maps (:mod:`.compare`) needs, for every class code, a name
("Tree cover") and a colour. They come from, in order of precedence:

1. a class table the user gives (CSV ``code,name,colour``), one for both dates or one
   per date;
2. the raster's own legend: a QGIS paletted style (``.qml``) beside it, the raster
   attribute table (RAT) and category names in its ``.aux.xml``, or its colour
   table. In QGIS, the layer's paletted renderer is passed in the same form;
3. otherwise the code itself: "Class 17", in a generated colour (and reported).

A mapping table (CSV ``code,target[,name[,date]]``) harmonises two legends before
the comparison, e.g. CORINE level 3 to level 1 (``111 -> 1``), or two products with
different codes. See docs/compare-classifications.md.
"""

from __future__ import annotations

import csv
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .colors import generated_color  # noqa: F401 - the colour of a class without one, by index
from .errors import InputError
from .files import aux_path_for, qml_path_for
from .models.card import check_class_name

RGB = tuple[int, int, int]

_HEX = re.compile(r"^#?([0-9a-fA-F]{6})([0-9a-fA-F]{2})?$")


@dataclass(frozen=True)
class ClassInfo:
    """What one code of a land-cover map means; either field may be unknown."""

    name: str | None = None
    color: RGB | None = None


#: A legend: class code -> what it means.
ClassLegend = Mapping[int, ClassInfo]


@dataclass(frozen=True)
class MappingRule:
    """One row of a mapping table: ``code`` (of ``date``, or both) becomes ``target``."""

    code: int
    target: int
    name: str | None = None
    date: str | None = None  # "t1", "t2" or None for both


# --- CSV tables ------------------------------------------------------------------------------

def parse_color(text: str) -> RGB | None:
    """``#rrggbb``, ``rrggbb`` or three numbers 0..255 (``"34,139,34"``, ``"34 139 34"``); None if empty."""
    text = text.strip()
    if not text:
        return None
    match = _HEX.match(text)
    if match:
        value = match.group(1)
        return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)
    parts = [p for p in re.split(r"[,\s;]+", text) if p]
    if len(parts) in (3, 4) and all(p.isdigit() and int(p) <= 255 for p in parts):
        return int(parts[0]), int(parts[1]), int(parts[2])
    raise ValueError(f"'{text}' is not a colour (use #rrggbb or r,g,b)")


def _rows(path: str | os.PathLike[str], what: str) -> Iterable[tuple[int, list[str]]]:
    """Non-empty rows of a CSV file with their line numbers, the header (if any) left out."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{what} not found: {file}; check the path")
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read {what} {file} ({error}); save it as a UTF-8 CSV file") from error
    sample = text[:4096]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    for number, row in enumerate(csv.reader(text.splitlines(), dialect), start=1):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if number == 1 and not _is_int(cells[0]):
            continue  # a header
        yield number, cells


def _is_int(text: str) -> bool:
    return bool(re.fullmatch(r"[+-]?\d+", text.strip()))


def _checked_name(name: str, where: str) -> str:
    """A class name from a table, refused as a model card's would be (:func:`~.models.card.check_class_name`)."""
    try:
        return check_class_name(name, f"{where}: the class")
    except ValueError as error:
        raise InputError(f"{error}; remove it from the table") from None


def read_class_table(path: str | os.PathLike[str]) -> dict[int, ClassInfo]:
    """A class table: one row per code, ``code,name,colour`` (colour optional; ``r,g,b`` columns also work).

    Raises:
        InputError: naming the file and line of anything that is not such a row.
    """
    table: dict[int, ClassInfo] = {}
    for number, cells in _rows(path, "class table"):
        where = f"class table {path}, line {number}"
        if not _is_int(cells[0]):
            raise InputError(f"{where}: '{cells[0]}' is not a class code; each row must be code,name,colour")
        try:
            if len(cells) >= 5 and all(_is_int(c) for c in cells[2:5]):
                color = parse_color(",".join(cells[2:5]))
            else:
                color = parse_color(cells[2]) if len(cells) > 2 else None
        except ValueError as error:
            raise InputError(f"{where}: {error}") from None
        code = int(cells[0])
        if code in table:
            raise InputError(f"{where}: code {code} is listed twice")
        table[code] = ClassInfo(_checked_name(cells[1], where) if len(cells) > 1 and cells[1] else None, color)
    if not table:
        raise InputError(f"class table {path} has no rows; write one row per class: code,name,colour")
    return table


def read_mapping_table(path: str | os.PathLike[str]) -> list[MappingRule]:
    """A mapping table: ``code,target[,name[,date]]`` rows (date ``T1``/``T2``, empty for both).

    Raises:
        InputError: naming the file and line of a bad row, or a code mapped twice.
    """
    rows: list[MappingRule] = []
    seen: set[tuple[int, str | None]] = set()
    for number, cells in _rows(path, "mapping table"):
        where = f"mapping table {path}, line {number}"
        if len(cells) < 2 or not (_is_int(cells[0]) and _is_int(cells[1])):
            raise InputError(f"{where}: each row must be code,target code[,target name[,date]]")
        date = cells[3].lower() if len(cells) > 3 and cells[3] else None
        if date not in (None, "t1", "t2"):
            raise InputError(f"{where}: the date column must be T1, T2 or empty, not '{cells[3]}'")
        code = int(cells[0])
        for key in ((code, "t1"), (code, "t2")) if date is None else ((code, date),):
            if key in seen:
                raise InputError(f"{where}: code {code} is mapped twice")
            seen.add(key)
        name = _checked_name(cells[2], where) if len(cells) > 2 and cells[2] else None
        rows.append(MappingRule(code, int(cells[1]), name, date))
    if not rows:
        raise InputError(f"mapping table {path} has no rows; write one row per code: code,target code")
    return rows


# --- a raster's own legend -------------------------------------------------------------------

def read_raster_legend(path: str | os.PathLike[str], band: int = 1) -> dict[int, ClassInfo]:
    """The legend of one band of a raster: its ``.qml`` paletted style, else RAT, category names and colour table."""
    legend = _read_gdal_legend(Path(path), band)
    for code, info in read_qml_palette(qml_path_for(path), band).items():
        old = legend.get(code, ClassInfo())
        legend[code] = ClassInfo(info.name or old.name, info.color or old.color)
    return legend


def read_qml_palette(qml: str | os.PathLike[str], band: int | None = None) -> dict[int, ClassInfo]:
    """The entries of a QGIS paletted (or unique-values pseudocolour) style; empty if there is none.

    With ``band``, a style that draws another band of the raster is no legend of this one
    (a multi-band raster's ``.qml`` says which band its renderer draws).
    """
    file = Path(qml)
    if not file.is_file():
        return {}
    try:
        root = ET.parse(file).getroot()
    except (ET.ParseError, OSError):
        return {}
    renderer = root.find(".//rasterrenderer")
    if band is not None and renderer is not None and renderer.get("band", str(band)) != str(band):
        return {}
    legend: dict[int, ClassInfo] = {}
    for entry in [*root.iter("paletteEntry"), *root.iter("item")]:
        value = entry.get("value", "")
        try:
            code = int(float(value))
        except ValueError:
            continue
        if code != float(value):
            continue
        try:
            color = parse_color(entry.get("color", ""))
        except ValueError:
            color = None
        legend.setdefault(code, ClassInfo(entry.get("label") or None, color))
    return legend


def _read_gdal_legend(path: Path, band_number: int) -> dict[int, ClassInfo]:
    from .io import gdal_session

    names: dict[int, str] = {}
    colors: dict[int, RGB] = {}
    with gdal_session() as gdal:
        try:
            dataset = gdal.Open(str(path))
        except RuntimeError:
            return {}
        band = dataset.GetRasterBand(band_number)
        rat = band.GetDefaultRAT()  # first: it makes GDAL load the .aux.xml (see core.rat)
        for value, name in enumerate(band.GetCategoryNames() or []):
            if name:
                names[value] = name
        table = band.GetColorTable()
        if table is not None:
            entries = {value: tuple(table.GetColorEntry(value)) for value in range(table.GetCount())}
            # Writers fill the values they were not given with one colour (often opaque black): not a legend.
            counts: dict[tuple[int, ...], int] = {}
            for entry in entries.values():
                counts[entry] = counts.get(entry, 0) + 1
            filler = {entry for entry, n in counts.items() if n > max(8, len(entries) // 4)}
            for value, (r, g, b, a) in entries.items():
                if a and (r, g, b, a) not in filler:
                    colors[value] = (r, g, b)
        if rat is not None and rat.GetRowCount():
            rat_names, rat_colors = _rat_legend(gdal, rat)
            names.update(rat_names)
            colors.update(rat_colors)
        band = dataset = None
    if aux_path_for(path).exists() or names or colors:
        return {code: ClassInfo(names.get(code), colors.get(code)) for code in sorted(names.keys() | colors.keys())}
    return {}


def _rat_legend(gdal: object, rat: object) -> tuple[dict[int, str], dict[int, RGB]]:
    usages = {rat.GetUsageOfCol(i): i for i in range(rat.GetColumnCount())}  # type: ignore[attr-defined]
    value_col = usages.get(gdal.GFU_MinMax, usages.get(gdal.GFU_Min))  # type: ignore[attr-defined]
    name_col = usages.get(gdal.GFU_Name)  # type: ignore[attr-defined]
    rgb_cols = [usages.get(u) for u in (gdal.GFU_Red, gdal.GFU_Green, gdal.GFU_Blue)]  # type: ignore[attr-defined]
    names: dict[int, str] = {}
    colors: dict[int, RGB] = {}
    if value_col is None:
        return names, colors
    for row in range(rat.GetRowCount()):  # type: ignore[attr-defined]
        code = int(rat.GetValueAsInt(row, value_col))  # type: ignore[attr-defined]
        if name_col is not None:
            name = rat.GetValueAsString(row, name_col)  # type: ignore[attr-defined]
            if name:
                names[code] = name
        if all(c is not None for c in rgb_cols):
            rgb = tuple(int(rat.GetValueAsInt(row, c)) for c in rgb_cols)  # type: ignore[attr-defined]
            if all(0 <= v <= 255 for v in rgb):
                colors[code] = rgb  # type: ignore[assignment]
    return names, colors
