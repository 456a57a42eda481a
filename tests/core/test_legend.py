"""Legend entries: which values a product has, and how each is labelled and coloured."""


import pytest

from core.encode import fromto_code
from core.legend import LegendEntry, binary_legend, class_legend, fromto_legend
from core.models.card import LANDSAT_SCD_CLASSES, SECOND_CLASSES

SECOND_N = len(SECOND_CLASSES)
WATER, BUILDING = 1, 5  # SECOND class numbers


def test_fromto_legend_labels_and_codes():
    entries = fromto_legend(SECOND_CLASSES)
    assert [e.value for e in entries] == list(range(SECOND_N * SECOND_N + 1))
    assert (entries[0].label, entries[0].alpha) == ("No change", 0)
    e = entries[fromto_code(WATER, BUILDING, SECOND_N)]
    assert (e.label, e.from_class, e.to_class, e.alpha) == ("Water -> Building", "Water", "Building", 255)
    diag = entries[fromto_code(WATER, WATER, SECOND_N)]
    assert diag.label == "Changed (Water, class unresolved)"
    assert all(x.label.isascii() for x in entries)
    assert len(fromto_legend(LANDSAT_SCD_CLASSES)) == 17


def test_class_and_binary_legends():
    entries = class_legend(LANDSAT_SCD_CLASSES)
    assert [(e.value, e.label) for e in entries] == [(0, "No change"), (1, "Farmland"), (2, "Desert"),
                                                     (3, "Building"), (4, "Water")]
    assert entries[0].alpha == 0
    assert entries[3].color == (230, 30, 100)
    binary = binary_legend((255, 0, 255))
    assert [(e.value, e.label, e.alpha) for e in binary] == [(0, "No change", 0), (1, "Change", 255)]
    assert binary[1].color == (255, 0, 255)
    assert LegendEntry(1, "x", [1, 2, 3]).color == (1, 2, 3)  # JSON lists are normalised
    with pytest.raises(ValueError, match="alpha"):
        LegendEntry(1, "x", (0, 0, 0), alpha=300)


# --- Raster legends ----------------------------------------------------------------------------
