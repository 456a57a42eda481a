"""The transition matrix as CSV and as typed rows."""

import csv
import io

import numpy as np
import pytest
from helpers import second_codes

from core.encode import NODATA_UINT8, TransitionCounter, fromto_code
from core.matrix import TransitionRow, transition_table_rows, write_transition_matrix
from core.models.card import LANDSAT_SCD_CLASSES, SECOND_CLASSES

SECOND_N = len(SECOND_CLASSES)
WATER, BUILDING = 1, 5  # SECOND class numbers


def test_transition_matrix_csv(tmp_path):
    codes, counter = second_codes()
    path = write_transition_matrix(tmp_path / "transitions.csv", SECOND_CLASSES, counter)
    assert [p.name for p in tmp_path.iterdir()] == ["transitions.csv"]  # no temporary left behind
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    names = [c.name for c in SECOND_CLASSES]
    assert rows[0] == ["unit", "from", *names, "total"]
    pixels = {r[1]: r[2:] for r in rows[1:] if r[0] == "pixels"}
    hectares = {r[1]: r[2:] for r in rows[1:] if r[0] == "hectares"}
    assert len(rows) == 1 + 2 * (SECOND_N + 3)

    water_to_building = int((codes == fromto_code(WATER, BUILDING, SECOND_N)).sum())
    assert int(pixels["Water"][BUILDING - 1]) == water_to_building
    changed = int(((codes > 0) & (codes != NODATA_UINT8)).sum())
    unchanged = int((codes == 0).sum())
    assert int(pixels["Total changed"][-1]) == changed
    assert sum(int(pixels[n][-1]) for n in names) == changed
    assert [int(v) for v in pixels["Total changed"][:-1]] == [
        sum(int(pixels[f][t]) for f in names) for t in range(SECOND_N)
    ]
    assert int(pixels["No change"][-1]) == unchanged
    assert pixels["No change"][:-1] == [""] * SECOND_N
    assert int(pixels["All valid pixels"][-1]) == codes.size - 9
    assert float(hectares["All valid pixels"][-1]) == pytest.approx((codes.size - 9) * 0.25 / 10_000)
    assert float(hectares["Water"][BUILDING - 1]) == pytest.approx(water_to_building * 0.25 / 10_000)

    with pytest.raises(ValueError, match="classes"):
        write_transition_matrix(tmp_path / "x.csv", LANDSAT_SCD_CLASSES, counter)


def test_transition_table_rows():
    counter = TransitionCounter(SECOND_N)
    code = fromto_code(WATER, BUILDING, SECOND_N)
    counter.add(np.array([[0, 0, code, code, code]], dtype=np.uint8), None, 100.0)
    rows = transition_table_rows(SECOND_CLASSES, counter)
    assert rows == [
        TransitionRow(0, None, None, "No change", 2, pytest.approx(0.02)),
        TransitionRow(code, "Water", "Building", "Water -> Building", 3, pytest.approx(0.03)),
    ]
    assert len(transition_table_rows(SECOND_CLASSES, counter, include_empty=True)) == SECOND_N * SECOND_N + 1
