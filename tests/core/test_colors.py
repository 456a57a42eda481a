"""Transition colours: distinct to the eye and in the family of the class each area became."""


import numpy as np
import pytest

from core import colors
from core.encode import fromto_code
from core.legend import fromto_legend
from core.models.card import LANDSAT_SCD_CLASSES, SECOND_CLASSES

SECOND_N = len(SECOND_CLASSES)
WATER, BUILDING = 1, 5  # SECOND class numbers


def lab_distance(a, b):
    la, lb = colors.srgb_to_lab(np.array([a, b]))
    return float(np.linalg.norm(la - lb))


# --- Legend content ----------------------------------------------------------------------------


@pytest.mark.parametrize("classes", [SECOND_CLASSES, LANDSAT_SCD_CLASSES], ids=["second", "landsat"])
def test_fromto_colours_are_distinct_and_follow_the_to_class(classes):
    n = len(classes)
    entries = fromto_legend(classes)[1:]
    colors = [e.color for e in entries]
    assert len(set(colors)) == len(colors)
    # Visibly different, not just different numbers (CIE76 delta E; ~2.3 is a just-noticeable difference).
    closest = min(lab_distance(a, b) for i, a in enumerate(colors) for b in colors[i + 1:])
    assert closest > 8
    for t, dst in enumerate(classes, start=1):
        into = [entries[fromto_code(f, t, n) - 1].color for f in range(1, n + 1) if f != t]
        # Each transition's colour is nearer its own "to" colour than the average other class colour is.
        own = np.mean([lab_distance(c, dst.color) for c in into])
        others = np.mean([lab_distance(c, o.color) for c in into for o in classes if o is not dst])
        assert own < others


@pytest.mark.parametrize("classes", [SECOND_CLASSES, LANDSAT_SCD_CLASSES], ids=["second", "landsat"])
def test_transitions_into_one_class_are_told_apart_in_its_legend(classes):
    # they sit side by side in a legend: five "-> Ground" greys used to lie 10 units apart (barely seen)
    n = len(classes)
    entries = fromto_legend(classes)[1:]
    for t, dst in enumerate(classes, start=1):
        column = [entries[fromto_code(f, t, n) - 1].color for f in range(1, n + 1) if f != t]
        closest = min(lab_distance(a, b) for i, a in enumerate(column) for b in column[i + 1:])
        assert closest >= 20, f"transitions into {dst.name}: {column}"


def test_as_many_distinct_class_colours_as_asked_for_quickly():
    # the golden-angle sequence alone holds about 1,650 distinct 8-bit colours; asking for more must still end
    taken = {colors.generated_color(i) for i in range(10)}
    chosen = colors.distinct_colors(20_000, taken)
    assert len(chosen) == 20_000 and len(set(chosen)) == 20_000 and not set(chosen) & taken
    assert chosen[:5] == [colors.generated_color(i) for i in range(10, 15)]  # readable colours come first
    with pytest.raises(ValueError, match="cannot choose"):
        colors.distinct_colors(1 << 24, taken)
