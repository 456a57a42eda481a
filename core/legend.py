"""What each value of a categorical output means: the legend entries, independent of any file format.

A from-to raster is only useful if every consumer shows "Water -> Building" rather
than a grey number. This module says which values a product has and how each is
labelled and coloured; the formats that carry it live beside it:

* :mod:`.rat`: GDAL colour table, category names and raster attribute table, in the
  ``.aux.xml`` sidecar;
* :mod:`.qml`: the QGIS style loaded automatically with the layer;
* :mod:`.matrix`: the transition matrix as CSV and as rows for the report;
* :mod:`.colors`: how transition colours are chosen.

Labels use an ASCII arrow (``" -> "``) so every GDAL, QGIS and CSV consumer shows them
unmangled; "No change" (value 0) is transparent. docs/legends.md has the conventions.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .colors import MAX_SPREAD_CLASSES, RGB, shade_of, transition_colors
from .encode import NO_CHANGE, iter_fromto

if TYPE_CHECKING:
    from .models.card import LandCoverClass

#: Separator of the two classes in a transition label (ASCII on purpose).
ARROW = " -> "
#: Colour stored for "No change" where a consumer ignores alpha.
NO_CHANGE_COLOR: RGB = (255, 255, 255)

SQUARE_METRES_PER_HECTARE = 10_000.0


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


def no_change_entry() -> LegendEntry:
    """Value 0 of every categorical output, transparent."""
    return LegendEntry(0, NO_CHANGE, NO_CHANGE_COLOR, alpha=0)


def transition_label(from_name: str, to_name: str) -> str:
    """Label of a transition; a same-class pair is a change whose class is unresolved."""
    if from_name == to_name:
        return f"Changed ({from_name}, class unresolved)"
    return f"{from_name}{ARROW}{to_name}"


def sorted_entries(entries: Sequence[LegendEntry]) -> list[LegendEntry]:
    """Entries in value order; refuses an empty legend or a value listed twice."""
    if not entries:
        raise ValueError("a legend needs at least one entry")
    ordered = sorted(entries, key=lambda e: e.value)
    values = [e.value for e in ordered]
    if len(set(values)) != len(values):
        raise ValueError("legend values must be unique")
    return ordered


def fromto_legend(classes: Sequence[LandCoverClass], present: Collection[int] | None = None) -> list[LegendEntry]:
    """Legend of a from-to raster: 0 "No change" (transparent), then codes ``1..N*N``.

    Codes follow :func:`core.encode.fromto_codes`; labels read "Water -> Building", and
    same-class codes "Changed (Water, class unresolved)".

    Args:
        classes: The land-cover classes ``1..N``.
        present: If given, only these codes (and 0) are listed: a comparison of many
            classes has far more possible pairs than pairs that occur.
    """
    if not classes:
        raise ValueError("a from-to legend needs at least one land-cover class")
    n = len(classes)
    palette = tuple((int(r), int(g), int(b)) for r, g, b in (c.color for c in classes))
    colors = transition_colors(palette) if n <= MAX_SPREAD_CLASSES else None
    entries = [no_change_entry()]
    # only the codes present are visited: a comparison of thousands of classes has millions of pairs
    pairs = iter_fromto(n) if present is None else (
        (code, (code - 1) // n + 1, (code - 1) % n + 1) for code in sorted(present) if 1 <= code <= n * n)
    for code, f, t in pairs:
        src, dst = classes[f - 1], classes[t - 1]
        color = colors[(f - 1, t - 1)] if colors is not None else shade_of(palette[t - 1], f - 1, n)
        entries.append(LegendEntry(code, transition_label(src.name, dst.name), color,
                                   from_class=src.name, to_class=dst.name))
    return entries


def class_legend(classes: Sequence[LandCoverClass]) -> list[LegendEntry]:
    """Legend of a per-date class raster: 0 "No change" (transparent), 1..N the dataset palette."""
    return [no_change_entry()] + [
        LegendEntry(i, c.name, c.color) for i, c in enumerate(classes, start=1)
    ]


def binary_legend(change_color: RGB = (255, 0, 0)) -> list[LegendEntry]:
    """Legend of a binary change mask: 0 "No change" (transparent), 1 "Change"."""
    return [no_change_entry(), LegendEntry(1, "Change", change_color)]

