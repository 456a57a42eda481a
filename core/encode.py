"""Turning blended probabilities into the integer codes the output rasters store.

Everything here is pure numpy and works on one band of rows at a time, so the engine
can decode and count while it streams a scene of any size. Decoding follows the model
contract (docs/model-contract.md):

* changed = ``change_prob > 0.5`` and, where a network learns one, ``change_prob >
  change_threshold`` (CLDRNet's rule, which reduces to 0.5 for the other networks);
* class = argmax over the land-cover classes ``1..N`` (index 0, "no change", is never a
  training target, so it is left out of the argmax);
* from-to code = ``0`` where unchanged, else ``1 + (c1 - 1) * N + (c2 - 1)``, i.e. the
  codes ``1..N*N`` enumerate (from, to) pairs row by row. This dense code is the
  ChangeMask evaluation convention and keeps SECOND (N = 6, 36 codes) and Landsat-SCD
  (N = 4, 16 codes) inside uint8. Codes with ``from == to`` ("diagonal") are changed
  pixels whose class the network did not resolve; they stay distinct codes so the
  legend can say so.

Per-date class maps are only trustworthy inside predicted change (the semantic change
datasets label land cover only there; see docs/model-contract.md), so :func:`mask_classes` zeroes
them elsewhere before they are written.

Nodata values are kept outside every code range: 255 for uint8 rasters, 65535 for
uint16 ones and -1.0 for the float32 probability raster.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

NODATA_UINT8 = 255
NODATA_UINT16 = 65535
NODATA_UINT32 = 2**32 - 1
NODATA_FLOAT32 = -1.0

#: Probability above which a pixel counts as changed (before any learned threshold).
CHANGE_PROBABILITY = 0.5

#: The label of code 0 in every categorical output.
NO_CHANGE = "No change"

_NODATA = {
    np.dtype(np.uint8): NODATA_UINT8,
    np.dtype(np.uint16): NODATA_UINT16,
    np.dtype(np.uint32): NODATA_UINT32,
    np.dtype(np.float32): NODATA_FLOAT32,
}


def nodata_for(dtype: npt.DTypeLike) -> int | float:
    """Nodata value of an output raster of ``dtype``.

    Raises:
        ValueError: For a dtype the engine never writes.
    """
    try:
        return _NODATA[np.dtype(dtype)]
    except KeyError:
        raise ValueError(f"no output nodata value defined for dtype {np.dtype(dtype)}") from None


def _dtype_for_max(max_value: int, widest: npt.DTypeLike = np.uint16) -> np.dtype:
    """Smallest unsigned dtype, up to ``widest``, whose nodata value stays above ``max_value``."""
    for dtype in (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32)):
        if max_value < _NODATA[dtype]:
            return dtype
        if dtype == np.dtype(widest):
            break
    raise ValueError(f"codes up to {max_value} do not fit a {np.dtype(widest)} raster with nodata "
                     f"{_NODATA[np.dtype(widest)]}")


def _check_num_classes(num_classes: int) -> None:
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"the number of land-cover classes must be a positive integer, got {num_classes!r}")


def class_dtype(num_classes: int) -> np.dtype:
    """Dtype of a per-date class raster (values ``0..N``, nodata reserved above them)."""
    _check_num_classes(num_classes)
    return _dtype_for_max(num_classes)


def code_dtype(num_classes: int, widest: npt.DTypeLike = np.uint16) -> np.dtype:
    """Dtype of a from-to raster: uint8 while ``N*N`` stays below the nodata 255, else uint16 (or uint32).

    ``N <= 15`` fits uint8 (225 codes); up to ``N = 255`` fits uint16. The networks stop
    there; comparing two land-cover maps passes ``widest=np.uint32`` so that any
    number of class pairs fits.

    Raises:
        ValueError: For more classes than ``widest`` can encode.
    """
    _check_num_classes(num_classes)
    return _dtype_for_max(num_classes * num_classes, widest)


def num_codes(num_classes: int) -> int:
    """Number of from-to values including 0 ("no change"): ``N*N + 1``."""
    _check_num_classes(num_classes)
    return num_classes * num_classes + 1


def decode_change(
    change_prob: npt.NDArray[np.floating[Any]],
    change_threshold: npt.NDArray[np.floating[Any]] | None = None,
) -> npt.NDArray[np.bool_]:
    """Binary change decision per pixel.

    The fixed 0.5 applies to every network; a learned threshold map (CLDRNet) can
    only make the decision stricter, never looser, which is how CLDRNet's paper
    combines its two maps. NaN probabilities decode as "unchanged"; the engine masks
    nodata separately.

    Args:
        change_prob: Blended probability of change, any shape.
        change_threshold: Blended learned threshold of the same shape, or None.

    Returns:
        Boolean array of ``change_prob``'s shape.
    """
    prob = np.asarray(change_prob)
    changed = prob > CHANGE_PROBABILITY
    if change_threshold is not None:
        threshold = np.asarray(change_threshold)
        if threshold.shape != prob.shape:
            raise ValueError(f"threshold shape {threshold.shape} differs from probability shape {prob.shape}")
        changed &= prob > threshold
    return changed


def decode_classes(class_probs: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.unsignedinteger[Any]]:
    """Most likely land-cover class ``1..N`` per pixel.

    Args:
        class_probs: ``[N, H, W]`` probabilities (or logits: only the order matters) of
            classes ``1..N``; the "no change" channel is already dropped.

    Returns:
        ``[H, W]`` array of ``argmax + 1`` in :func:`class_dtype`. Ties go to the
        lower class, as ``numpy.argmax`` breaks them.
    """
    probs = np.asarray(class_probs)
    if probs.ndim != 3 or probs.shape[0] < 1:
        raise ValueError(f"class probabilities must be [N, H, W] with N >= 1, got shape {probs.shape}")
    dtype = class_dtype(probs.shape[0])
    return (np.argmax(probs, axis=0) + 1).astype(dtype)


def mask_classes(classes: npt.NDArray[np.integer[Any]], changed: npt.NDArray[np.bool_]) -> npt.NDArray[np.integer[Any]]:
    """Per-date class map with 0 ("no change") wherever the pixel is unchanged.

    The networks are trained on class labels that exist only inside change, so
    classes outside it are not land-cover predictions and must not be shown.
    """
    classes = np.asarray(classes)
    return np.where(changed, classes, 0).astype(classes.dtype, copy=False)


def fromto_codes(
    c1: npt.NDArray[np.integer[Any]],
    c2: npt.NDArray[np.integer[Any]],
    changed: npt.NDArray[np.bool_],
    num_classes: int,
    widest: npt.DTypeLike = np.uint16,
) -> npt.NDArray[np.unsignedinteger[Any]]:
    """Joint from-to code per pixel: 0 where unchanged, else ``1 + (c1-1)*N + (c2-1)``.

    Args:
        c1, c2: Classes ``1..N`` at the first and second date (unmasked or masked:
            only changed pixels are read).
        changed: Boolean change decision.
        num_classes: ``N``.
        widest: The widest dtype allowed, as for :func:`code_dtype`.

    Returns:
        Array in :func:`code_dtype` ``(N, widest)``.

    Raises:
        ValueError: If a changed pixel has a class outside ``1..N``; that would
            silently alias another transition.
    """
    dtype = code_dtype(num_classes, widest)
    c1 = np.asarray(c1)
    c2 = np.asarray(c2)
    changed = np.asarray(changed, dtype=bool)
    if not c1.shape == c2.shape == changed.shape:
        raise ValueError(f"shapes differ: c1 {c1.shape}, c2 {c2.shape}, changed {changed.shape}")
    if changed.any():
        for name, c in (("c1", c1), ("c2", c2)):
            if c.size and c.min() >= 1 and c.max() <= num_classes:
                continue  # every pixel in range: no need to look at the changed ones alone
            inside = c[changed]
            if inside.min() < 1 or inside.max() > num_classes:
                raise ValueError(f"{name} has classes outside 1..{num_classes} in changed pixels")
    # In the code's own dtype: every changed pixel's code fits it, and unchanged ones are replaced by 0
    # below (whatever unsigned wrap-around their classes gave), so no int64 copies are needed.
    a = c1.astype(dtype, copy=False)
    b = c2.astype(dtype, copy=False)
    with np.errstate(over="ignore"):
        code = (a - dtype.type(1)) * dtype.type(num_classes) + b
    return np.where(changed, code, dtype.type(0)).astype(dtype, copy=False)


def fromto_code(from_class: int, to_class: int, num_classes: int) -> int:
    """Code of one (from, to) pair of classes ``1..N``; the scalar form of :func:`fromto_codes`."""
    _check_num_classes(num_classes)
    if not (1 <= from_class <= num_classes and 1 <= to_class <= num_classes):
        raise ValueError(f"classes must be in 1..{num_classes}, got ({from_class}, {to_class})")
    return 1 + (from_class - 1) * num_classes + (to_class - 1)


def fromto_pairs(
    code: npt.ArrayLike, num_classes: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Inverse of :func:`fromto_codes`: the (from, to) classes of each code.

    Code 0 ("no change") gives ``(0, 0)``. Values above ``N*N`` (e.g. nodata) are an
    error rather than a made-up pair.

    Returns:
        Two int64 arrays of ``code``'s shape (0-d for a scalar code).
    """
    _check_num_classes(num_classes)
    code = np.asarray(code, dtype=np.int64)
    if code.size and (code.min() < 0 or code.max() > num_classes * num_classes):
        raise ValueError(f"from-to codes must be in 0..{num_classes * num_classes}")
    k = code - 1
    unchanged = code == 0
    from_class = np.where(unchanged, 0, k // num_classes + 1)
    to_class = np.where(unchanged, 0, k % num_classes + 1)
    return from_class, to_class


def iter_fromto(num_classes: int) -> Iterator[tuple[int, int, int]]:
    """``(code, from, to)`` for every code ``1..N*N`` in code order."""
    _check_num_classes(num_classes)
    for f in range(1, num_classes + 1):
        for t in range(1, num_classes + 1):
            yield fromto_code(f, t, num_classes), f, t


def _count_runs(flat: npt.NDArray[np.integer[Any]], minlength: int) -> npt.NDArray[np.int64]:
    """``np.bincount(flat, minlength=minlength)``, counted run by run where the values come in runs.

    Categorical maps are mostly runs of one code; ``np.bincount`` stalls on the repeated
    increments of one bin, while adding each run's length to its value's bin is 3-5x
    faster. Noise-like rows (short runs) take the plain count.
    """
    ends = np.flatnonzero(flat[1:] != flat[:-1])
    if ends.size >= flat.size // 4:
        return np.bincount(flat, minlength=minlength)
    ends = np.append(ends, flat.size - 1)
    lengths = np.diff(ends, prepend=-1)
    # Float weights are exact: a band's pixel count is far below 2**53.
    return np.bincount(flat[ends], weights=lengths, minlength=minlength).astype(np.int64)


class CodeCounter:
    """Pixel counts and areas per integer value ``0..size-1``, accumulated band by band.

    Used for every categorical output (binary mask: ``size=2``; class map:
    ``N + 1``); :class:`TransitionCounter` adds the from x to view for from-to codes.
    Areas are summed per row because a geographic CRS has pixels whose ground area
    shrinks with latitude: the engine passes the area of one pixel of each row.
    """

    def __init__(self, size: int) -> None:
        if int(size) != size or size < 1:
            raise ValueError(f"counter size must be a positive integer, got {size!r}")
        self.size = int(size)
        self._counts = np.zeros(self.size, dtype=np.int64)
        self._areas = np.zeros(self.size, dtype=np.float64)

    def add(
        self,
        codes: npt.NDArray[np.integer[Any]],
        valid: npt.NDArray[np.bool_] | None,
        pixel_area_per_row: npt.ArrayLike,
    ) -> None:
        """Count one band of rows.

        Args:
            codes: ``[rows, cols]`` integer codes.
            valid: ``[rows, cols]`` mask of pixels to count (False for nodata), or
                None to count all.
            pixel_area_per_row: Ground area of one pixel in m², one value per row
                (a scalar is broadcast, for projected CRSs).

        Raises:
            ValueError: On a shape mismatch, or a valid pixel whose code is outside
                ``0..size-1`` (nodata left unmasked would otherwise be miscounted).
        """
        codes = np.asarray(codes)
        if codes.ndim != 2:
            raise ValueError(f"codes must be [rows, cols], got shape {codes.shape}")
        rows = codes.shape[0]
        areas = np.broadcast_to(np.asarray(pixel_area_per_row, dtype=np.float64), (rows,))
        if valid is not None:
            valid = np.asarray(valid, dtype=bool)
            if valid.shape != codes.shape:
                raise ValueError(f"valid mask shape {valid.shape} differs from codes shape {codes.shape}")
        if codes.size == 0:
            return
        if valid is not None and valid.all():
            valid = None  # the common case: no nodata in this band, no masked copies to make
        # Invalid pixels go to one extra bin and are dropped: cheaper than gathering the valid ones.
        values = codes if valid is None else np.where(valid, codes, 0)
        low, high = values.min(), values.max()
        if low < 0 or high >= self.size:
            raise ValueError(f"valid pixels hold values outside 0..{self.size - 1}")
        if valid is not None:
            values = np.where(valid, values, self.size)
        flat = values.ravel()
        if np.all(areas == areas[0]):  # a projected CRS: one pixel area for every row
            counts = _count_runs(flat, self.size + 1)
            area_sums = counts * float(areas[0])
        else:
            flat = flat.astype(np.intp, copy=False)
            counts = np.bincount(flat, minlength=self.size + 1)
            area_sums = np.bincount(flat, weights=np.broadcast_to(areas[:, None], codes.shape).ravel(),
                                    minlength=self.size + 1)
        self._counts += counts[: self.size]
        self._areas += area_sums[: self.size]

    @classmethod
    def from_totals(cls, counts: npt.ArrayLike, areas_m2: npt.ArrayLike) -> CodeCounter:
        """A counter holding given totals (e.g. derived from other counters)."""
        counts = np.asarray(counts, dtype=np.int64)
        counter = cls(counts.size)
        counter._counts[:] = counts
        counter._areas[:] = np.asarray(areas_m2, dtype=np.float64)
        return counter

    def merge(self, other: CodeCounter) -> None:
        """Add another counter's totals (e.g. from a parallel worker)."""
        if other.size != self.size:
            raise ValueError(f"cannot merge counters of sizes {self.size} and {other.size}")
        self._counts += other._counts
        self._areas += other._areas

    @property
    def counts(self) -> npt.NDArray[np.int64]:
        """Pixel count per value (a copy)."""
        return self._counts.copy()

    @property
    def areas_m2(self) -> npt.NDArray[np.float64]:
        """Area in m² per value (a copy)."""
        return self._areas.copy()

    @property
    def total_pixels(self) -> int:
        return int(self._counts.sum())

    @property
    def total_area_m2(self) -> float:
        return float(self._areas.sum())

    def count(self, value: int) -> int:
        return int(self._counts[value])

    def area_m2(self, value: int) -> float:
        return float(self._areas[value])

    def stats(self) -> dict[int, tuple[int, float]]:
        """``value -> (pixel count, area in m²)`` for every value that has pixels, the form legend writers take.

        Values without pixels are left out (a comparison of thousands of classes has
        millions of codes, few of them present); a writer takes them as ``(0, 0.0)``.
        """
        present = np.flatnonzero(self._counts)
        return dict(zip(present.tolist(), zip(self._counts[present].tolist(), self._areas[present].tolist(),
                                              strict=True), strict=True))


class TransitionCounter(CodeCounter):
    """Counts of from-to codes, also viewable as a from x to matrix.

    Unchanged pixels have no class (the networks do not predict one there), so they
    are a single "no change" total, not a diagonal of the matrix. The diagonal holds
    changed pixels whose class stayed the same ("class unresolved").
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_codes(num_classes))
        self.num_classes = int(num_classes)

    def _matrix(self, values: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return values[1:].reshape(self.num_classes, self.num_classes).copy()

    def pixel_matrix(self) -> npt.NDArray[np.int64]:
        """``[N, N]`` changed-pixel counts; row = from class ``i+1``, column = to class ``j+1``."""
        return self._matrix(self._counts)

    def area_matrix_m2(self) -> npt.NDArray[np.float64]:
        """``[N, N]`` changed areas in m², laid out like :meth:`pixel_matrix`."""
        return self._matrix(self._areas)

    @property
    def unchanged_pixels(self) -> int:
        return int(self._counts[0])

    @property
    def unchanged_area_m2(self) -> float:
        return float(self._areas[0])

    @property
    def changed_pixels(self) -> int:
        return int(self._counts[1:].sum())

    @property
    def changed_area_m2(self) -> float:
        return float(self._areas[1:].sum())
