"""Comparing two existing land-cover maps: post-classification change, with no network.

:func:`compare_classifications` is the entry point, in the style of
:func:`core.engine.run_change_detection` and scriptable without QGIS (and without
torch). It enters the products stage (:class:`~.products.ProductsStage`) with rows
read from two categorical rasters instead of rows decoded from a network:

0. one band of each raster holds the class codes: band 1 unless the caller chooses
   another (``band_t1``, ``band_t2``); a multi-band raster read on band 1 because no
   band was chosen is said in the log (an RGB rendering of a classification, or a
   stack, would otherwise give a plausible but wrong map);
1. T2 is aligned onto T1's grid by nearest neighbour (a category is never
   interpolated), over the area both cover; nodata in either date is nodata in every
   output (:class:`~.io.RasterPair` with ``categorical=True``);
2. a first pass over the aligned pair finds the codes each date holds; the optional
   mapping table harmonises them; the harmonised codes, sorted, are the classes
   ``1..K`` of every product, named and coloured from the class tables or the
   rasters' own legends (:mod:`.classtable`);
3. a second pass hands band after band of rows to the products stage: a pixel
   changed where its two classes differ, its from-to code is the pair's code
   ``1 + (c1 - 1) * K + (c2 - 1)`` (uint8, uint16 or uint32 as ``K * K`` needs).

The transition matrix is the full cross-tabulation, persistence on the diagonal.
Memory is bounded by the raster's width: only a band of rows is held at a time.
See docs/compare-classifications.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from . import encode
from .classtable import (
    RGB,
    ClassInfo,
    MappingRule,
    generated_color,
    read_class_table,
    read_mapping_table,
    read_raster_legend,
)
from .errors import Cancelled, InputError
from .io import RasterPair, check_bands, open_raster, outputs_folders, terminate_cleanly, writing_outputs
from .matrix import TransitionRow
from .models.card import LandCoverClass
from .product_table import COMPARE
from .products import Grid, Legends, OutputPaths, ProductsStage, check_outputs
from .progress import Progress, ProgressSpan

#: Pixels per band of rows: bounds memory whatever the raster's width.
CHUNK_PIXELS = 1 << 22

#: Codes a direct lookup table handles; wider codes go through a sorted search.
_LOOKUP_LIMIT = 1 << 20

#: Share of the progress bar: the first pass, then the products (polygons take what is left).
_FIRST_PASS_SHARE = 0.25
_POLYGONS_SHARE = 0.15


@dataclass(frozen=True)
class CompareOptions:
    """How to read the two maps' legends and which minimum mapping unit to apply.

    Attributes:
        class_table: CSV ``code,name,colour`` for both dates (or T1 alone when
            ``class_table_t2`` is given); overrides the rasters' own legends.
        class_table_t2: CSV for T2, when its legend differs from T1's.
        mapping: CSV ``code,target[,name[,date]]`` harmonising the codes before the comparison.
        legend_t1, legend_t2: Legends from elsewhere (the plugin passes the layers'
            paletted renderers); they override what the raster files carry.
        min_patch_pixels: Minimum mapping unit: change patches smaller than this
            become "no change" (the pixel keeps its T1 class) in the from-to map, the
            change mask and the matrix.
        overwrite: Replace existing files that this tool did not write (by default
            only its own earlier outputs are replaced).
    """

    class_table: str | os.PathLike[str] | None = None
    class_table_t2: str | os.PathLike[str] | None = None
    mapping: str | os.PathLike[str] | None = None
    legend_t1: Mapping[int, ClassInfo] | None = None
    legend_t2: Mapping[int, ClassInfo] | None = None
    min_patch_pixels: int = 0
    overwrite: bool = False


@dataclass
class CompareSummary:
    """What a comparison did, for the log, the report and the benchmark."""

    outputs: dict[str, str] = field(default_factory=dict)
    width: int = 0
    height: int = 0
    #: The band read from T1 and from T2.
    bands: tuple[int, int] = (1, 1)
    classes: tuple[LandCoverClass, ...] = ()
    #: Harmonised class code of each class ``1..K`` (the order of ``classes``).
    codes: tuple[int, ...] = ()
    unnamed_codes: tuple[int, ...] = ()
    valid_pixels: int = 0
    changed_pixels: int = 0
    changed_area_m2: float = 0.0
    transitions: list[TransitionRow] = field(default_factory=list)
    #: Hectares that kept their class, per class (the diagonal of the matrix).
    persistence_ha: list[float] = field(default_factory=list)
    polygons: int = 0
    elapsed_seconds: float = 0.0

    @property
    def megapixels_per_second(self) -> float:
        return self.width * self.height / 1e6 / self.elapsed_seconds if self.elapsed_seconds else 0.0


def _input_files(path_t1: str | os.PathLike[str], path_t2: str | os.PathLike[str],
                 options: CompareOptions) -> dict[str, str | os.PathLike[str]]:
    """Every file the comparison reads, by the name the user knows it by, so no output may replace one."""
    files: dict[str, str | os.PathLike[str] | None] = {
        "T1": path_t1, "T2": path_t2, "the class table": options.class_table,
        "the class table of T2": options.class_table_t2, "the mapping table": options.mapping}
    return {label: path for label, path in files.items() if path is not None}


def compare_classifications(
    path_t1: str | os.PathLike[str],
    path_t2: str | os.PathLike[str],
    outputs: OutputPaths,
    options: CompareOptions | None = None,
    progress: Progress | None = None,
    *,
    band_t1: int | None = None,
    band_t2: int | None = None,
) -> CompareSummary:
    """Compare two land-cover maps of one area and write the requested products.

    Args:
        path_t1: The earlier map; its grid (CRS, pixel size, alignment) is the master.
        path_t2: The later map, in any CRS, resolution or extent overlapping T1.
        outputs: The products to write (``fromto``, ``t1_classes``, ``t2_classes``,
            ``change_mask``, ``transitions_csv``, ``polygons``).
        options: Legends, mapping and minimum mapping unit.
        progress: Progress, log and cancel hooks.
        band_t1, band_t2: The band (1-based) holding each date's class codes. None
            reads band 1 and, when the raster has more bands, logs a warning saying
            which band is compared and how to choose another.

    Returns:
        A summary with the classes compared and the paths written.

    Raises:
        ChangeDetectionError: for any problem the user can fix (inputs, tables,
            output location), or :class:`~.errors.Cancelled`.
    """
    started = time.perf_counter()
    options = options or CompareOptions()
    progress = progress or Progress()
    if options.min_patch_pixels < 0:
        raise InputError(f"the minimum patch size must be 0 or more pixels, got {options.min_patch_pixels}")
    requested = check_outputs(outputs.requested(), COMPARE, lambda names: (
        f"comparing two land-cover maps gives no {', '.join(names)} (there is no probability without a model)"),
        inputs=_input_files(path_t1, path_t2, options), overwrite=options.overwrite)
    bands = (_class_band(path_t1, band_t1, "T1", progress), _class_band(path_t2, band_t2, "T2", progress))
    legends_in = _legends(path_t1, path_t2, options, bands)
    mapping = read_mapping_table(options.mapping) if options.mapping else []
    summary = CompareSummary(bands=bands)
    with RasterPair(path_t1, path_t2, bands[:1], bands[1:], needed_bands=1, categorical=True) as pair:
        summary.width, summary.height = pair.width, pair.height
        progress.info(f"comparison area: {pair.width} x {pair.height} px on T1's grid ({pair.crs})")
        rows = max(1, min(pair.height, CHUNK_PIXELS // max(1, pair.width)))
        codes_t1, codes_t2 = _codes_present(pair, rows, ProgressSpan(progress, 0.0, _FIRST_PASS_SHARE))
        if codes_t1.size == 0:
            raise InputError("T1 and T2 have no valid pixel in common (all nodata where they overlap); check "
                             "the nodata values and that both maps cover the same area")
        harmonise_t1 = _harmoniser(mapping, "t1")
        harmonise_t2 = _harmoniser(mapping, "t2")
        targets = np.union1d(harmonise_t1(codes_t1), harmonise_t2(codes_t2))
        classes, unnamed = _classes(targets, mapping, legends_in)
        summary.classes, summary.codes, summary.unnamed_codes = classes, tuple(int(c) for c in targets), unnamed
        progress.info(f"{len(classes)} classes after harmonising ({len(codes_t1)} codes in T1, {len(codes_t2)} in "
                      f"T2); from-to codes stored as {encode.code_dtype(len(classes), np.uint32)}")
        if unnamed:
            progress.info("warning: no name for the codes " + ", ".join(map(str, unnamed))
                          + "; they are named by their code (give a class table to name them)")
        lookup_t1 = _class_lookup(codes_t1, harmonise_t1(codes_t1), targets)
        lookup_t2 = _class_lookup(codes_t2, harmonise_t2(codes_t2), targets)

        share = 1.0 - _FIRST_PASS_SHARE - (_POLYGONS_SHARE if outputs.polygons is not None else 0.0)
        stage = ProductsStage(
            Grid(pair.width, pair.height, pair.crs, pair.transform, pair.pixel_area_m2),
            Legends(COMPARE, classes, classes_inside_change_only=False, present_only=True), requested,
            min_patch_pixels=options.min_patch_pixels,
            progress=ProgressSpan(progress, _FIRST_PASS_SHARE + share, 1.0 - _FIRST_PASS_SHARE - share))
        rows_progress = ProgressSpan(progress, _FIRST_PASS_SHARE, share)
        try:
            with writing_outputs(outputs_folders(requested)), terminate_cleanly(stage.discard):
                for start, raw1, raw2, valid in _bands(pair, rows, rows_progress):
                    c1, c2 = lookup_t1(raw1, valid), lookup_t2(raw2, valid)
                    stage.write_rows(start, valid, c1 != c2, c1=c1, c2=c2)
                result = stage.finish()
        except BaseException:
            stage.discard()
            raise
    summary.outputs.update(result.outputs)
    summary.transitions = result.transitions
    summary.persistence_ha = result.persistence_ha
    summary.valid_pixels, summary.changed_pixels = result.valid_pixels, result.changed_pixels
    summary.changed_area_m2, summary.polygons = result.changed_area_m2, result.polygons
    summary.elapsed_seconds = time.perf_counter() - started
    progress.set_progress(1.0)
    progress.info(f"done: {summary.changed_pixels} of {summary.valid_pixels} pixels changed class; "
                  f"{summary.elapsed_seconds:.1f} s ({summary.megapixels_per_second:.1f} Mpx/s)")
    return summary


# --- inputs ----------------------------------------------------------------------------------

def _class_band(path: str | os.PathLike[str], band: int | None, label: str, progress: Progress) -> int:
    """The band of ``path`` that holds the class codes, checked: it exists and holds integers.

    Raises:
        InputError: the band is not one of the raster's (naming the file and how many
            bands it has), or it holds floating-point values (a continuous image such as
            NDVI or reflectance, not a map of class codes).
    """
    with open_raster(path) as src:
        (number,) = check_bands([1 if band is None else band], src.count, f"{label} ({path})", 1)
        dtype = src.dtypes[number - 1]
        if np.dtype(dtype).kind not in "iu":
            raise InputError(
                f"{label} ({path}), band {number}, holds {dtype} values; a land-cover map must be an integer "
                "raster of class codes (choose the band that holds the codes, or convert it, e.g. with Raster > "
                "Conversion > Translate, type Byte)")
        if src.count > 1:
            _say_which_band(label, path, number, src.count, band is not None,
                            {"red", "green", "blue"} <= set(src.colorinterp), progress)
    return number


def _say_which_band(label: str, path: str | os.PathLike[str], number: int, count: int, chosen: bool,
                    marked_rgb: bool, progress: Progress) -> None:
    """Log which band of a multi-band map is compared; warn when nobody chose it, or when it may be a picture.

    A multi-band raster read on band 1 by default is the silent mistake this guards
    against (an RGB rendering of a classification, a stack). A raster whose bands are
    marked red, green and blue may be a rendered picture: a colour channel read as
    class codes gives a plausible but wrong map, whichever band is chosen.
    """
    picture = ("its bands are marked red, green and blue: if it is a rendered picture of a classification (a "
               "screenshot, or a map exported as a rendered image), compare the classification's own codes "
               "instead, since a colour is not a class code")
    if not chosen:
        progress.info(f"warning: {label} ({path}) has {count} bands and no band was chosen: band 1 is compared. "
                      + (picture[0].upper() + picture[1:] + ". " if marked_rgb else "")
                      + f"If the class codes are in another band, choose it (BAND_{label} in QGIS and "
                      f"qgis_process, band_{label.lower()}= in Python)")
        return
    progress.info(f"{label} ({path}): band {number} of {count} is compared")
    if marked_rgb:
        progress.info(f"warning: {label} ({path}): {picture}")


@dataclass
class _DateLegends:
    """Each date's legend (raster, then layer, then class table) and the class tables alone."""

    t1: dict[int, ClassInfo]
    t2: dict[int, ClassInfo]
    tables: dict[int, ClassInfo]


def _legends(path_t1: str | os.PathLike[str], path_t2: str | os.PathLike[str], options: CompareOptions,
             bands: tuple[int, int]) -> _DateLegends:
    t1 = read_raster_legend(path_t1, bands[0])
    t2 = read_raster_legend(path_t2, bands[1])
    t1.update(options.legend_t1 or {})
    t2.update(options.legend_t2 or {})
    table_t1 = read_class_table(options.class_table) if options.class_table else {}
    table_t2 = read_class_table(options.class_table_t2) if options.class_table_t2 else table_t1
    t1.update(table_t1)
    t2.update(table_t2)
    return _DateLegends(t1, t2, {**table_t2, **table_t1})


def _bands(pair: RasterPair, rows: int, progress: Progress) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Bands of aligned rows: ``(first row, T1 codes, T2 codes, valid)``."""
    for start in range(0, pair.height, rows):
        if progress.is_cancelled():
            raise Cancelled("cancelled by the user; no output was written")
        count = min(rows, pair.height - start)
        img1, img2, valid = pair.read(start, 0, count, pair.width)
        yield start, img1[0], img2[0], valid
        progress.set_progress((start + count) / pair.height)


def _codes_present(pair: RasterPair, rows: int, progress: Progress) -> tuple[np.ndarray, np.ndarray]:
    """The sorted codes each date holds where both are valid (the first pass)."""
    found: list[set[int]] = [set(), set()]
    for _, raw1, raw2, valid in _bands(pair, rows, progress):
        invalid = int(valid.size - np.count_nonzero(valid))
        if invalid == valid.size:
            continue
        for index, raw in enumerate((raw1, raw2)):
            # Invalid pixels take the first valid pixel's code, so they add no code of their own.
            values = np.where(valid, raw, raw.flat[int(np.argmax(valid))]) if invalid else raw
            found[index].update(_distinct(values.ravel()).tolist())
    return np.array(sorted(found[0]), dtype=np.int64), np.array(sorted(found[1]), dtype=np.int64)


def _distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values of a flat array, read from the values of its runs.

    Land-cover maps are mostly runs of one code along a row; counting every pixel
    (``np.bincount``) stalls on the repeated increments of one bin, so only the value
    that ends each run (and the last value) is looked at: 4-5x faster on real maps.
    Noise-like maps (runs of one pixel) take the plain count.
    """
    ends = np.flatnonzero(values[1:] != values[:-1])
    if ends.size < values.size // 4:
        values = np.append(values[ends], values[-1:])
    low, high = int(values.min()), int(values.max())
    if low >= 0 and high < _LOOKUP_LIMIT:
        return np.flatnonzero(np.bincount(values, minlength=high + 1))
    return np.unique(values)


# --- harmonised classes ----------------------------------------------------------------------

def _rules(mapping: list[MappingRule], date: str) -> dict[int, int]:
    """Code -> harmonised code for one date; a row for that date wins over a row for both."""
    rules = {r.code: r.target for r in mapping if r.date is None}
    rules.update({r.code: r.target for r in mapping if r.date == date})
    return rules


def _harmoniser(mapping: list[MappingRule], date: str) -> Callable[[np.ndarray], np.ndarray]:
    """Maps an array of one date's codes to harmonised codes (codes not in the table keep their code)."""
    rules = _rules(mapping, date)

    def harmonise(codes: np.ndarray) -> np.ndarray:
        return np.array([rules.get(int(c), int(c)) for c in codes], dtype=np.int64)

    return harmonise


def _merge(*infos: ClassInfo | None) -> ClassInfo:
    name = next((i.name for i in infos if i is not None and i.name), None)
    color = next((i.color for i in infos if i is not None and i.color), None)
    return ClassInfo(name, color)


def _classes(targets: np.ndarray, mapping: list[MappingRule],
             legends: _DateLegends) -> tuple[tuple[LandCoverClass, ...], tuple[int, ...]]:
    """Name and colour of each harmonised code.

    A code no mapping row produces keeps the meaning its legends give it (T1's first).
    A code the mapping produces is named by the mapping, else by the class table;
    a raster's legend describes it only in a date where that code is not remapped
    (a raster legend describes the raster's own codes, not the harmonised ones).
    """
    produced = {r.target for r in mapping}
    mapped_names = {r.target: ClassInfo(r.name) for r in mapping if r.name}
    remapped = {date: set(_rules(mapping, date)) for date in ("t1", "t2")}
    classes: list[LandCoverClass] = []
    unnamed: list[int] = []
    used_colors: set[RGB] = set()
    for index, code in enumerate(int(c) for c in targets):
        own = [legends.t1.get(code) if code not in remapped["t1"] else None,
               legends.t2.get(code) if code not in remapped["t2"] else None]
        info = _merge(mapped_names.get(code), legends.tables.get(code), *own) if code in produced else _merge(*own)
        name = info.name
        if not name:
            unnamed.append(code)
            name = f"Class {code}"
        color = info.color
        step = index
        while color is None or (info.color is None and color in used_colors):
            color = generated_color(step)
            step += 7
        used_colors.add(color)
        classes.append(LandCoverClass(name, color))
    names = [c.name for c in classes]
    for position, name in enumerate(names):
        if names.count(name) > 1:  # two codes with one name: the labels must still tell them apart
            classes[position] = LandCoverClass(f"{name} ({int(targets[position])})", classes[position].color)
    return tuple(classes), tuple(unnamed)


def _class_lookup(codes: np.ndarray, harmonised: np.ndarray,
                  targets: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Maps raw codes of one date (a band of rows) to the classes ``1..K`` of every product."""
    indices = np.searchsorted(targets, harmonised) + 1  # 1-based class of each raw code present
    dtype = encode.class_dtype(len(targets))
    low, high = (int(codes.min()), int(codes.max())) if codes.size else (0, 0)
    if low >= 0 and high < _LOOKUP_LIMIT:
        table = np.ones(high + 1, dtype=dtype)
        table[codes] = indices

        def lookup(raw: np.ndarray, valid: np.ndarray) -> np.ndarray:
            # Valid pixels hold codes found by the first pass (<= high); invalid ones were read as 0.
            return table[raw]
    else:
        def lookup(raw: np.ndarray, valid: np.ndarray) -> np.ndarray:
            position = np.clip(np.searchsorted(codes, raw), 0, len(codes) - 1)
            return np.where(valid, indices[position], 1).astype(dtype)

    return lookup
