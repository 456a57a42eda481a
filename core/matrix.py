"""The from x to transition matrix: as a CSV file and as typed rows for the report.

See docs/legends.md for the layout and what the diagonal means.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from .encode import NO_CHANGE, CodeCounter, TransitionCounter
from .files import atomic_write
from .legend import SQUARE_METRES_PER_HECTARE, fromto_legend

if TYPE_CHECKING:
    from .models.card import LandCoverClass


def _check_counter(classes: Sequence[LandCoverClass], counter: TransitionCounter) -> None:
    if counter.num_classes != len(classes):
        raise ValueError(f"counter has {counter.num_classes} classes but {len(classes)} class names were given")


def _format_ha(area_m2: float) -> str:
    return f"{area_m2 / SQUARE_METRES_PER_HECTARE:.6f}"


def _format_ha_row(areas_m2: np.ndarray) -> list[str]:
    """:func:`_format_ha` of a whole row at once (a matrix of thousands of classes has millions of cells)."""
    return list(map("{:.6f}".format, (areas_m2 / SQUARE_METRES_PER_HECTARE).tolist()))


def _format_pixels_row(pixels: np.ndarray) -> list[str]:
    return list(map(str, pixels.tolist()))


def _full_matrices(counter: TransitionCounter, persistence: CodeCounter | None) -> tuple[np.ndarray, np.ndarray]:
    pixels, areas = counter.pixel_matrix(), counter.area_matrix_m2()
    if persistence is not None:
        diagonal = np.arange(counter.num_classes)
        pixels[diagonal, diagonal] += persistence.counts[1:]
        areas[diagonal, diagonal] += persistence.areas_m2[1:]
    return pixels, areas


def transition_matrix_csv(classes: Sequence[LandCoverClass], counter: TransitionCounter,
                          persistence: CodeCounter | None = None) -> str:
    """The text :func:`write_transition_matrix` writes."""
    buffer = io.StringIO()
    _write_matrix(buffer, classes, counter, persistence)
    return buffer.getvalue()


def _write_matrix(stream: IO[str], classes: Sequence[LandCoverClass], counter: TransitionCounter,
                  persistence: CodeCounter | None) -> None:
    """Write the matrix row by row (thousands of classes give hundreds of MB: never held as one string)."""
    _check_counter(classes, counter)
    names = [c.name for c in classes]
    pixels, areas = _full_matrices(counter, persistence)
    blocks = (
        ("pixels", pixels, counter.unchanged_pixels, str, _format_pixels_row),
        ("hectares", areas, counter.unchanged_area_m2, _format_ha, _format_ha_row),
    )
    off_diagonal = ~np.eye(len(names), dtype=bool) if persistence is not None else np.ones((len(names),) * 2, bool)
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(["unit", "from", *names, "total"])
    blank = [""] * len(names)
    for unit, matrix, unchanged, fmt, fmt_row in blocks:
        for name, row in zip(names, matrix, strict=True):
            writer.writerow([unit, name, *fmt_row(row), fmt(row.sum())])
        changes = np.where(off_diagonal, matrix, 0)
        changed = changes.sum()
        writer.writerow([unit, "Total changed", *fmt_row(changes.sum(axis=0)), fmt(changed)])
        writer.writerow([unit, NO_CHANGE, *blank, fmt(unchanged)])
        writer.writerow([unit, "All valid pixels", *blank, fmt(changed + unchanged)])


def write_transition_matrix(
    csv_path: str | os.PathLike[str], classes: Sequence[LandCoverClass], counter: TransitionCounter,
    persistence: CodeCounter | None = None,
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

    Rows are "from" (first date), columns "to" (second date). From a network, the
    diagonal holds changed pixels whose class did not change ("class unresolved");
    unchanged pixels have no class and appear only in the "No change" row. Given
    ``persistence`` (comparing two land-cover maps), the matrix is the full
    cross-tabulation: the diagonal holds the pixels whose class stayed the same, the
    row totals are T1's class areas, and "Total changed" leaves the diagonal out.

    Returns:
        ``csv_path``.
    """
    path = Path(csv_path)
    with atomic_write(path) as stream:
        _write_matrix(stream, classes, counter, persistence)
    return path


@dataclass(frozen=True)
class TransitionRow:
    """One from-to code with its pixels and area, for the report and the summary.

    Attributes:
        value: The from-to code (0: "No change").
        from_class, to_class: Class names; None for "No change".
        label: As in the legend.
        pixels: Pixel count.
        area_ha: Ground area in hectares.
    """

    value: int
    from_class: str | None
    to_class: str | None
    label: str
    pixels: int
    area_ha: float


def transition_table_rows(
    classes: Sequence[LandCoverClass], counter: TransitionCounter, *, include_empty: bool = False
) -> list[TransitionRow]:
    """One row per from-to code: "No change" first, then transitions in code order.

    Codes without pixels are left out unless ``include_empty``. Unchanged pixels are
    the "No change" row (for a comparison of two maps, the per-class persistence is
    in the matrix, :func:`write_transition_matrix`).
    """
    _check_counter(classes, counter)
    present = None if include_empty else {0} | {int(v) for v in np.flatnonzero(counter.counts)}
    return [TransitionRow(e.value, e.from_class, e.to_class, e.label, counter.count(e.value),
                          counter.area_m2(e.value) / SQUARE_METRES_PER_HECTARE)
            for e in fromto_legend(classes, present=present)]
