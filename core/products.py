"""The products stage: decoded rows in, every output file out.

The engine works in two stages. The inference stage (:mod:`.engine`) turns tiles into
blended probabilities and decodes finished rows into per-date class rows and a change
row; comparing two land-cover maps (:mod:`.compare`) reads the same rows from two
categorical rasters. Both hand the rows, band by band in row order, to a
:class:`ProductsStage`, which writes everything the user asked for: from-to codes,
per-date class maps, the change mask and probability, their counters and legends,
the transition matrix, the minimum mapping unit (sieve) and the change polygons.

What each product is, is described once, in :data:`.product_table.PRODUCTS`: its name (the
:class:`~.engine.OutputPaths` field), dtype and nodata, which legend it carries, which
tasks offer it, its Processing parameter and how QGIS styles it. The engine, the
plugin's parameters and the styling all read that table, so adding a product touches
it, the stage's row writer and its tests.

Every file is written under a hidden temporary name and moved into place only when
all of them are complete, so nothing half-written ever looks finished.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import encode, matrix, pathguard, qml, rat
from .errors import InputError
from .io import RasterWriter, check_output_path, discard, publish, read_rows, temporary_path
from .legend import SQUARE_METRES_PER_HECTARE, LegendEntry, binary_legend, class_legend, fromto_legend
from .product_table import BY_NAME, COMPARE, RASTERS, SEMANTIC, code_product
from .progress import Progress, ProgressSpan

if TYPE_CHECKING:
    from .io import CRS, GeoTransform
    from .models.card import LandCoverClass

log = logging.getLogger(__name__)

RGB = tuple[int, int, int]


def polygon_source(task: str, rasters: Collection[str]) -> str:
    """The raster the polygons are drawn from: the from-to codes, unless only the change mask was asked for.

    A semantic model run for its change mask alone (``scd:binarychange``) gives
    "Change" polygons, as its mask does; otherwise polygons carry their transition.
    """
    if task in (SEMANTIC, COMPARE) and ("fromto" in rasters or "change_mask" not in rasters):
        return "fromto"
    return "change_mask"


@dataclass(frozen=True)
class OutputPaths:
    """Which products to write, and where. Leave a field ``None`` to skip it.

    Attributes:
        fromto: From-to codes (0 = no change), semantic models and comparisons only.
        t1_classes, t2_classes: Per-date land-cover class, inside change only (0 elsewhere).
        change_prob: Blended change probability, float32.
        change_mask: 0/1 change mask (any model).
        transitions_csv: Transition matrix with pixel counts and areas.
        polygons: One polygon per connected change patch, with its classes and area
            (GeoPackage, Shapefile, GeoJSON, ... by extension).

    The products themselves are described in :data:`.product_table.PRODUCTS`.
    """

    fromto: str | os.PathLike[str] | None = None
    t1_classes: str | os.PathLike[str] | None = None
    t2_classes: str | os.PathLike[str] | None = None
    change_prob: str | os.PathLike[str] | None = None
    change_mask: str | os.PathLike[str] | None = None
    transitions_csv: str | os.PathLike[str] | None = None
    polygons: str | os.PathLike[str] | None = None

    def rasters(self) -> dict[str, Path]:
        return {name: Path(getattr(self, name)) for name in RASTERS if getattr(self, name) is not None}

    def requested(self) -> dict[str, str | os.PathLike[str] | None]:
        """Every product by name, None where not requested."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class Legends:
    """What the values of the categorical products mean.

    Attributes:
        task: :data:`SEMANTIC`, :data:`BINARY` or :data:`COMPARE`.
        classes: The land-cover classes ``1..N`` (empty for binary change).
        change_color: Colour of "Change" in the mask.
        classes_inside_change_only: Per-date class maps hold 0 outside change. True
            for the networks, which learn classes only where change happened; False
            when comparing two land-cover maps, whose classes hold everywhere.
        present_only: Label only the from-to codes that occur (comparisons of many
            classes have far more possible pairs than pairs present).
    """

    task: str
    classes: tuple[LandCoverClass, ...] = ()
    change_color: RGB = (255, 0, 0)
    classes_inside_change_only: bool = True
    present_only: bool = False

    @property
    def semantic(self) -> bool:
        return self.task in (SEMANTIC, COMPARE)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def code_dtype(self) -> np.dtype:
        """Dtype of the from-to and class rasters."""
        if not self.semantic:
            return np.dtype(np.uint8)
        return encode.code_dtype(self.num_classes, np.uint32 if self.task == COMPARE else np.uint16)

    def entries(self, legend: str, present: set[int] | None = None) -> list[LegendEntry]:
        """The legend of a product (see :attr:`Product.legend`); ``present`` limits a from-to legend."""
        if legend == "fromto":
            return fromto_legend(self.classes, present=present if self.present_only else None)
        if legend == "classes":
            return class_legend(self.classes)
        return binary_legend(self.change_color)


@dataclass
class Counts:
    """Pixel counts and areas of the finished products, for legends, the matrix and the summary."""

    fromto: encode.TransitionCounter | None
    t1: encode.CodeCounter | None
    t2: encode.CodeCounter | None
    mask: encode.CodeCounter
    #: Every valid pixel by its T1 class, unmasked; for a full cross-tabulation.
    t1_all: encode.CodeCounter | None = None
    valid_pixels: int = 0

    @classmethod
    def empty(cls, legends: Legends) -> Counts:
        n = legends.num_classes
        if not legends.semantic:
            return cls(None, None, None, encode.CodeCounter(2))
        t1 = encode.CodeCounter(n + 1)
        # A comparison's T1 map holds every pixel's class: its counter is also the T1 total of the matrix.
        return cls(encode.TransitionCounter(n), t1, encode.CodeCounter(n + 1), encode.CodeCounter(2),
                   t1 if legends.task == COMPARE else None)

    def persistence(self) -> encode.CodeCounter | None:
        """Pixels whose class stayed the same, per class (comparisons only): T1's total minus what changed."""
        if self.t1_all is None or self.fromto is None:
            return None
        counts = self.t1_all.counts
        areas = self.t1_all.areas_m2
        counts[1:] -= self.fromto.pixel_matrix().sum(axis=1)
        areas[1:] = np.maximum(areas[1:] - self.fromto.area_matrix_m2().sum(axis=1), 0.0)
        counts[0], areas[0] = 0, 0.0
        return encode.CodeCounter.from_totals(counts, areas)


@dataclass(frozen=True)
class Grid:
    """Where the products lie: size, CRS, transform and the ground area of each row's pixels."""

    width: int
    height: int
    crs: CRS
    transform: GeoTransform
    pixel_area_m2: Callable[[np.ndarray], np.ndarray]


@dataclass
class StageResult:
    """What the products stage wrote and counted."""

    outputs: dict[str, str] = field(default_factory=dict)
    transitions: list[matrix.TransitionRow] = field(default_factory=list)
    valid_pixels: int = 0
    changed_pixels: int = 0
    changed_area_m2: float = 0.0
    polygons: int = 0
    #: Hectares that kept their class, per class ``1..N`` (comparisons only; empty otherwise).
    persistence_ha: list[float] = field(default_factory=list)


def check_outputs(paths: Mapping[str, str | os.PathLike[str] | None], task: str,
                  refusal: Callable[[list[str]], str], *, inputs: Mapping[str, str | os.PathLike[str]],
                  model: str | os.PathLike[str] | None = None, overwrite: bool = False) -> dict[str, Path]:
    """The requested products as paths, refused before any work if the task cannot write one, two collide,
    or one would overwrite an input, the model or a file this tool did not write (see :mod:`.pathguard`).

    Args:
        paths: Product name -> file (None: not requested).
        task: The task that will write them.
        refusal: The message for products the task cannot write, given their names.
        inputs: The files the run reads, by the name the user knows them by (``T1``, ``T2``, ...).
        model: The model file, when the run reads one.
        overwrite: The caller allows replacing existing files that this tool did not write.
    """
    requested = {name: Path(p) for name, p in paths.items() if p is not None}
    if not requested:
        raise InputError("no output was requested; choose at least one output file")
    unknown = sorted(set(requested) - set(BY_NAME))
    if unknown:
        raise ValueError(f"unknown products: {', '.join(unknown)}")
    refused = [name for name in requested if task not in BY_NAME[name].tasks]
    if refused:
        raise InputError(refusal(refused))
    if len({p.resolve() for p in requested.values()}) != len(requested):
        raise InputError("two outputs have the same file name; give each output its own file")
    pathguard.check_outputs([pathguard.Output(name, path, _GUARD_KIND.get(name, "raster"), overwrite)
                             for name, path in requested.items()], inputs=inputs, model=model)
    for path in requested.values():
        check_output_path(path)
    if "polygons" in requested:
        from .postprocess import check_vector_output

        check_vector_output(requested["polygons"])  # refuse an unknown format before the long part
    return requested


#: How the path guard treats each product that is not a raster.
_GUARD_KIND = {"transitions_csv": "table", "polygons": "vector"}


class ProductsStage:
    """Writes every requested product from decoded rows, then finishes and publishes them.

    Use: :meth:`write_rows` for each band of rows in order, then :meth:`finish`; on
    any error :meth:`discard` removes everything written so far.

    Args:
        grid: Where the products lie.
        legends: What the values mean.
        outputs: Product name -> final file, for the products asked for (rasters,
            ``transitions_csv`` and ``polygons``; the report belongs to the caller).
        min_patch_pixels: Minimum mapping unit (0 or 1 keeps every patch).
        progress: Log, cancel, and the bar during :meth:`finish` (polygons).
    """

    def __init__(self, grid: Grid, legends: Legends, outputs: Mapping[str, Path], *, min_patch_pixels: int = 0,
                 progress: Progress | None = None) -> None:
        self.grid, self.legends = grid, legends
        self.progress = progress or Progress()
        self.min_patch_pixels = min_patch_pixels
        self.finals = {name: Path(path) for name, path in outputs.items() if BY_NAME[name].is_raster}
        self.csv = Path(outputs["transitions_csv"]) if outputs.get("transitions_csv") else None
        self.polygons = Path(outputs["polygons"]) if outputs.get("polygons") else None
        self.temporaries = {name: temporary_path(path) for name, path in self.finals.items()}
        self.polygon_source = polygon_source(legends.task, self.finals)
        needed = {code_product(legends.task)} if min_patch_pixels > 1 else set()
        needed |= {self.polygon_source} if self.polygons is not None else set()
        for reference in sorted(needed - set(self.temporaries)):
            # The sieve and the polygons work on this raster and every count is taken from it afterwards:
            # write it beside the outputs even when it was not asked for, and never publish it.
            beside = next(iter([*self.finals.values(), *[p for p in (self.csv, self.polygons) if p]]))
            self.temporaries[reference] = temporary_path(beside.with_suffix(".tif"))
        self.code_dtype = legends.code_dtype
        self.counts = Counts.empty(legends)
        self.result = StageResult()
        self.writers: dict[str, RasterWriter] = {}
        for name, temporary in self.temporaries.items():
            product = BY_NAME[name]
            dtype = np.dtype(product.dtype) if product.dtype else self.code_dtype
            self.writers[name] = RasterWriter(temporary, width=grid.width, height=grid.height, dtype=dtype.name,
                                              nodata=encode.nodata_for(dtype), crs=grid.crs,
                                              transform=grid.transform)

    # -- rows -------------------------------------------------------------------------------------
    def write_rows(self, start: int, valid: np.ndarray, changed: np.ndarray, *, prob: np.ndarray | None = None,
                   c1: np.ndarray | None = None, c2: np.ndarray | None = None) -> None:
        """Encode, count and write one band of rows.

        Args:
            start: First row of the band.
            valid: ``[rows, width]``: True where both dates hold data.
            changed: ``[rows, width]`` change decision (only read where valid).
            prob: Change probability, for the probability raster.
            c1, c2: Classes ``1..N`` per date (semantic tasks).
        """
        count = valid.shape[0]
        changed = changed & valid
        area = self.grid.pixel_area_m2(np.arange(start, start + count))
        counts = self.counts
        rows: dict[str, np.ndarray] = {}
        if self.legends.semantic:
            assert c1 is not None and c2 is not None and counts.fromto is not None
            n = self.legends.num_classes
            widest = np.uint32 if self.legends.task == COMPARE else np.uint16
            codes = encode.fromto_codes(c1, c2, changed, n, widest).astype(self.code_dtype, copy=False)
            counts.fromto.add(codes, valid, area)
            rows["fromto"] = _with_nodata(codes, valid)
            for name, classes, counter in (("t1_classes", c1, counts.t1), ("t2_classes", c2, counts.t2)):
                if name not in self.writers and not (name == "t1_classes" and counts.t1_all is not None):
                    continue  # neither written nor needed for the matrix
                if self.legends.classes_inside_change_only:
                    classes = encode.mask_classes(classes, changed)
                rows[name] = _with_nodata(classes.astype(self.code_dtype, copy=False), valid)
                assert counter is not None
                counter.add(rows[name], valid, area)
        if "change_mask" in self.writers or not self.legends.semantic:
            rows["change_mask"] = _with_nodata(changed.astype(np.uint8), valid)
            counts.mask.add(rows["change_mask"], valid, area)
        if "change_prob" in self.writers:
            assert prob is not None
            rows["change_prob"] = np.where(valid, prob, encode.NODATA_FLOAT32).astype(np.float32)
        self.result.valid_pixels += int(np.count_nonzero(valid))
        changed_per_row = np.count_nonzero(changed, axis=1)
        self.result.changed_pixels += int(changed_per_row.sum())
        self.result.changed_area_m2 += float(changed_per_row @ area)
        for name, writer in self.writers.items():
            writer.write_rows(start, rows[name])

    # -- finishing --------------------------------------------------------------------------------
    def finish(self) -> StageResult:
        """Close the rasters, sieve, add legends, write the matrix and polygons, then move everything into place."""
        for writer in self.writers.values():
            writer.close()
        if self.min_patch_pixels > 1:
            self._sieve()
        present = self._present_codes()
        warnings: list[str] = []
        for name, temporary in self.temporaries.items():
            if name not in self.finals:
                continue  # an internal raster, discarded below
            kind = BY_NAME[name].legend
            if kind == "probability":
                qml.write_probability_style(temporary)
                continue
            counter = {"fromto": self.counts.fromto, "t1_classes": self.counts.t1, "t2_classes": self.counts.t2,
                       "change_mask": self.counts.mask}[name]
            assert counter is not None and kind is not None
            files = rat.write_legend(temporary, self.legends.entries(kind, present), stats=counter.stats())
            warnings.extend(files.warnings)
        for warning in warnings:
            self.progress.info(f"warning: {warning}")
        if self.legends.semantic:
            assert self.counts.fromto is not None
            self.result.transitions = matrix.transition_table_rows(self.legends.classes, self.counts.fromto)
            persistence = self.counts.persistence()
            if persistence is not None:
                self.result.persistence_ha = (persistence.areas_m2[1:] / SQUARE_METRES_PER_HECTARE).tolist()
        if self.csv is not None:
            assert self.counts.fromto is not None
            matrix.write_transition_matrix(self.csv, self.legends.classes, self.counts.fromto,
                                           persistence=self.counts.persistence())
            self.result.outputs["transitions_csv"] = str(self.csv)
        if self.polygons is not None:
            self._polygonize(present)
        for name, temporary in self.temporaries.items():
            if name in self.finals:
                publish(temporary, self.finals[name])
                self.result.outputs[name] = str(self.finals[name])
            else:
                discard(temporary)
        return self.result

    def _present_codes(self) -> set[int]:
        reference = self.counts.fromto if self.legends.semantic else self.counts.mask
        assert reference is not None
        return {0} | {int(v) for v in np.flatnonzero(reference.counts)}

    def _polygonize(self, present: set[int]) -> None:
        from .postprocess import polygonize_changes

        name = self.polygon_source
        kind = BY_NAME[name].legend
        assert kind is not None
        self.progress.info("vectorising change patches ...")
        self.result.polygons = polygonize_changes(self.temporaries[name], self.polygons,
                                                  self.legends.entries(kind, present), progress=self.progress)
        self.result.outputs["polygons"] = str(self.polygons)
        self.progress.info(f"polygons: {self.result.polygons} change patches written to {self.polygons}")

    def _sieve(self) -> None:
        """Remove change patches below the minimum mapping unit, then count again."""
        from .postprocess import sieve_small_changes

        reference = self.temporaries[code_product(self.legends.task)]
        # Per-date maps of a comparison are the inputs' classes, true everywhere: only the change products follow.
        keep = {"change_prob"} | (set() if self.legends.classes_inside_change_only else {"t1_classes", "t2_classes"})
        dependents = [path for name, path in self.temporaries.items() if path != reference and name not in keep]
        removed = sieve_small_changes(reference, self.min_patch_pixels, dependents=dependents,
                                      progress=ProgressSpan(self.progress, 1.0, 0.0))
        self.progress.info(f"minimum mapping unit {self.min_patch_pixels} px: "
                           f"{removed} changed pixels in smaller patches set to no change")
        self._recount()

    def _recount(self) -> None:
        """Rebuild the counters and the totals from the finished (sieved) rasters."""
        fresh = Counts.empty(self.legends)
        fresh.t1_all = self.counts.t1_all  # T1's classes do not change when a change patch is removed
        counters: dict[str, encode.CodeCounter | None] = {
            "fromto": fresh.fromto, "t1_classes": fresh.t1, "t2_classes": fresh.t2, "change_mask": fresh.mask}
        for name, counter in counters.items():
            if counter is None or name not in self.temporaries:
                continue
            for start, values in read_rows(self.temporaries[name]):
                valid = values != encode.nodata_for(values.dtype)
                counter.add(values, valid, self.grid.pixel_area_m2(np.arange(start, start + values.shape[0])))
        reference = fresh.fromto if self.legends.semantic else fresh.mask
        assert reference is not None
        self.result.changed_pixels = int(reference.total_pixels - reference.count(0))
        self.result.changed_area_m2 = float(reference.total_area_m2 - reference.area_m2(0))
        self.counts = fresh

    def discard(self) -> None:
        """Remove everything this stage wrote (after an error or a cancel)."""
        for writer in self.writers.values():
            try:
                writer.abort()
            except Exception:  # noqa: BLE001 - cleaning up after another error
                log.debug("could not close %s", writer.path, exc_info=True)
        for temporary in self.temporaries.values():
            discard(temporary)


def _with_nodata(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    if valid.all():
        return values  # no nodata in this band: no copy
    nodata = encode.nodata_for(values.dtype)
    return np.where(valid, values, nodata).astype(values.dtype)
