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
