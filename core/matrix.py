"""The from x to transition matrix: as a CSV file and as typed rows for the report.

See docs/legends.md for the layout and what the diagonal means.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .encode import NO_CHANGE, TransitionCounter
from .files import atomic_write_text
from .legend import SQUARE_METRES_PER_HECTARE, fromto_legend

if TYPE_CHECKING:
    from .models.card import LandCoverClass


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
    atomic_write_text(path, transition_matrix_csv(classes, counter))
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

