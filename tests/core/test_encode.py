"""Decoding probabilities into codes, and counting codes into transitions."""

import numpy as np
import pytest

from core import encode
from core.encode import (
    CodeCounter,
    TransitionCounter,
    class_dtype,
    code_dtype,
    decode_change,
    decode_classes,
    fromto_code,
    fromto_codes,
    fromto_pairs,
    iter_fromto,
    mask_classes,
    nodata_for,
)


def all_pairs(n):
    f, t = np.meshgrid(np.arange(1, n + 1), np.arange(1, n + 1), indexing="ij")
    return f, t


@pytest.mark.parametrize(("n", "dtype"), [(4, np.uint8), (6, np.uint8), (15, np.uint8), (16, np.uint16),
                                          (40, np.uint16)])
def test_fromto_round_trip(n, dtype):
    f, t = all_pairs(n)
    codes = fromto_codes(f, t, np.ones_like(f, dtype=bool), n)
    assert codes.dtype == dtype
    # Dense, row-major enumeration 1..N*N: every pair gets its own code.
    assert codes.ravel().tolist() == list(range(1, n * n + 1))
    assert codes.max() < nodata_for(dtype)
    back_f, back_t = fromto_pairs(codes, n)
    np.testing.assert_array_equal(back_f, f)
    np.testing.assert_array_equal(back_t, t)


def test_known_codes():
    # SECOND: ground (2) -> building (5) is 1 + 1*6 + 4 = 11; Landsat: water (4) -> desert (2) = 14.
    assert fromto_code(2, 5, 6) == 11
    assert fromto_code(4, 2, 4) == 14
    assert [int(v) for v in fromto_pairs(11, 6)] == [2, 5]
    assert list(iter_fromto(2)) == [(1, 1, 1), (2, 1, 2), (3, 2, 1), (4, 2, 2)]


def test_unchanged_is_zero_whatever_the_classes():
    c1 = np.array([[1, 0], [3, 2]])
    c2 = np.array([[2, 0], [3, 9]])  # classes of unchanged pixels are never read
    changed = np.array([[True, False], [True, False]])
    codes = fromto_codes(c1, c2, changed, 3)
    np.testing.assert_array_equal(codes, [[2, 0], [9, 0]])
    f, t = fromto_pairs(codes, 3)
    np.testing.assert_array_equal(f, [[1, 0], [3, 0]])
    np.testing.assert_array_equal(t, [[2, 0], [3, 0]])


def test_fromto_rejects_bad_input():
    ones = np.ones((2, 2), dtype=int)
    with pytest.raises(ValueError, match=r"outside 1\.\.3"):
        fromto_codes(ones * 0, ones, np.ones((2, 2), bool), 3)
    with pytest.raises(ValueError, match="shapes differ"):
        fromto_codes(ones, ones, np.ones((3, 2), bool), 3)
    with pytest.raises(ValueError, match=r"0\.\.9"):
        fromto_pairs([10], 3)
    with pytest.raises(ValueError, match="positive integer"):
        code_dtype(0)


def test_dtypes_keep_nodata_free():
    assert code_dtype(15) == np.uint8  # 225 codes < 255
    assert code_dtype(16) == np.uint16  # 256 codes would hit the nodata 255
    assert code_dtype(255) == np.uint16
    with pytest.raises(ValueError, match="uint16"):
        code_dtype(256)
    assert class_dtype(254) == np.uint8
    assert class_dtype(255) == np.uint16
    assert nodata_for(np.uint8) == encode.NODATA_UINT8 == 255
    assert nodata_for("uint16") == encode.NODATA_UINT16 == 65535
    assert nodata_for(np.float32) == encode.NODATA_FLOAT32 == -1.0
    with pytest.raises(ValueError, match="int32"):
        nodata_for(np.int32)


def test_decode_change_fixed_and_learned_threshold():
    prob = np.array([0.2, 0.5, 0.51, 0.6, 0.6, 0.9, np.nan])
    np.testing.assert_array_equal(decode_change(prob), [False, False, True, True, True, True, False])
    threshold = np.array([0.0, 0.1, 0.3, 0.7, 0.59, 0.95, 0.1])
    # Both conditions must hold: a low learned threshold never lets p <= 0.5 through.
    np.testing.assert_array_equal(decode_change(prob, threshold), [False, False, True, False, True, False, False])
    with pytest.raises(ValueError, match="shape"):
        decode_change(prob, threshold[:3])


def test_decode_classes_argmax_plus_one():
    probs = np.zeros((3, 2, 2), dtype=np.float32)
    probs[0, 0, 0] = 1
    probs[2, 0, 1] = 1
    probs[1, 1, 0] = 1
    probs[:, 1, 1] = 1 / 3  # tie: the lower class wins
    out = decode_classes(probs)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[1, 3], [2, 1]])
    assert decode_classes(np.zeros((300, 1, 1))).dtype == np.uint16
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        decode_classes(np.zeros((2, 2)))


def test_mask_classes():
    classes = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    out = mask_classes(classes, np.array([[True, False], [False, True]]))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[1, 0], [0, 4]])


def brute_force(codes, valid, row_area, size):
    counts = np.zeros(size, dtype=np.int64)
    areas = np.zeros(size)
    for r in range(codes.shape[0]):
        for c in range(codes.shape[1]):
            if valid[r, c]:
                counts[codes[r, c]] += 1
                areas[codes[r, c]] += row_area[r]
    return counts, areas


def test_transition_counter_with_latitude_varying_pixel_areas():
    n = 4
    rng = np.random.default_rng(1)
    rows, cols = 30, 17
    codes = rng.integers(0, n * n + 1, (rows, cols)).astype(np.uint8)
    valid = rng.random((rows, cols)) > 0.2
    codes[~valid] = encode.NODATA_UINT8  # nodata must be skipped, not counted
    # A geographic grid: a pixel's ground area shrinks with cos(latitude), row by row.
    lat = np.deg2rad(np.linspace(10, 70, rows))
    row_area = 900.0 * np.cos(lat)

    counter = TransitionCounter(n)
    for start in range(0, rows, 8):  # band by band, as the engine streams
        stop = min(start + 8, rows)
        counter.add(codes[start:stop], valid[start:stop], row_area[start:stop])

    counts, areas = brute_force(codes, valid, row_area, n * n + 1)
    np.testing.assert_array_equal(counter.counts, counts)
    np.testing.assert_allclose(counter.areas_m2, areas)
    assert counter.total_pixels == valid.sum()
    assert counter.unchanged_pixels == counts[0]
    assert counter.changed_pixels == counts[1:].sum()
    np.testing.assert_allclose(counter.unchanged_area_m2, areas[0])
    np.testing.assert_allclose(counter.changed_area_m2 + counter.unchanged_area_m2, counter.total_area_m2)
    # Matrix: row = from, column = to.
    matrix = counter.pixel_matrix()
    assert matrix.shape == (n, n)
    assert matrix[3, 1] == counts[fromto_code(4, 2, n)]
    np.testing.assert_allclose(counter.area_matrix_m2()[0, 2], areas[fromto_code(1, 3, n)])
    stats = counter.stats()
    assert stats[fromto_code(2, 3, n)] == (counts[fromto_code(2, 3, n)], pytest.approx(areas[fromto_code(2, 3, n)]))
    # Equal-area rows give the plain count x area.
    flat = TransitionCounter(n)
    flat.add(codes, valid, 0.25)
    np.testing.assert_allclose(flat.areas_m2, counts * 0.25)


def test_counter_rejects_unmasked_nodata_and_merges():
    counter = CodeCounter(2)
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        counter.add(np.array([[0, 255]], dtype=np.uint8), None, 1.0)
    with pytest.raises(ValueError, match="shape"):
        counter.add(np.zeros((2, 2), dtype=np.uint8), np.ones((2, 3), bool), 1.0)
    counter.add(np.array([[0, 1], [1, 1]]), None, np.array([2.0, 3.0]))
    counter.add(np.zeros((0, 5), dtype=np.uint8), None, np.zeros(0))  # an empty band is fine
    other = CodeCounter(2)
    other.add(np.array([[1]]), np.array([[True]]), 10.0)
    counter.merge(other)
    assert counter.counts.tolist() == [1, 4]
    assert counter.areas_m2.tolist() == [2.0, 2.0 + 3.0 + 3.0 + 10.0]
    with pytest.raises(ValueError, match="merge"):
        counter.merge(CodeCounter(3))


@pytest.mark.parametrize("layout", ["fields", "noise"])
def test_code_counter_counts_every_pixel_of_field_like_and_noise_like_bands(layout: str) -> None:
    # Field-like bands are counted run by run: a run ending a row, a band, or beside nodata counts in full.
    rng = np.random.default_rng(5)
    if layout == "fields":
        codes = np.kron(rng.integers(0, 4, (5, 7)), np.ones((6, 9), dtype=np.uint8)).astype(np.uint8)
    else:
        codes = rng.integers(0, 4, (30, 63)).astype(np.uint8)
    codes[-1, -1] = 4
    valid = np.ones(codes.shape, dtype=bool)
    counter = encode.CodeCounter(5)
    counter.add(codes, valid, 100.0)
    valid[3, 10:20] = False
    counter.add(codes, valid, 100.0)
    expected = np.bincount(codes.ravel(), minlength=5) * 2 - np.bincount(codes[3, 10:20], minlength=5)
    assert counter.counts.tolist() == expected.tolist()
    assert counter.areas_m2.tolist() == (expected * 100.0).tolist()
