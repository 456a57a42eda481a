"""Scaling any input data type to what the network was trained on."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import InputError
from core.models.card import InputScaling
from core.preprocess import plan_scaling

MEAN, STD = (100.0, 100.0), (50.0, 25.0)


def test_eight_bit_input_is_only_normalised() -> None:
    image = np.full((2, 4, 4), 150, dtype=np.float32)
    plan = plan_scaling(("uint8", "uint8"), image, np.ones((4, 4), bool), InputScaling(), MEAN, STD)
    out = plan.apply(image.copy())
    np.testing.assert_allclose(out[0], 1.0)
    np.testing.assert_allclose(out[1], 2.0)


def test_declared_range_maps_linearly_and_clips() -> None:
    image = np.array([[[0, 5000, 10000, 20000]]] * 2, dtype=np.float32)
    plan = plan_scaling(("uint16", "uint16"), image, np.ones((1, 4), bool),
                        InputScaling(method="range", minimum=0, maximum=10000), (0.0, 0.0), (1.0, 1.0))
    np.testing.assert_allclose(plan.apply(image.copy())[0, 0], [0, 127.5, 255, 255])


def test_percentile_stretch_ignores_nodata_and_is_per_band() -> None:
    rng = np.random.default_rng(0)
    image = np.stack([rng.uniform(1000, 2000, (50, 50)), rng.uniform(0, 1, (50, 50))]).astype(np.float32)
    valid = np.ones((50, 50), bool)
    valid[:10] = False
    image[:, :10] = -9999  # nodata must not stretch the range
    plan = plan_scaling(("float32", "float32"), image, valid, InputScaling(low=0, high=100), (0.0, 0.0), (1.0, 1.0))
    out = plan.apply(image.copy())
    assert out[:, 10:].min() >= 0 and out[:, 10:].max() == pytest.approx(255, abs=1e-3)
    assert "percentile" in plan.description


def test_percentile_stretch_needs_valid_pixels() -> None:
    image = np.zeros((1, 3, 3), np.float32)
    with pytest.raises(InputError, match="no valid pixel"):
        plan_scaling(("uint16",), image, np.zeros((3, 3), bool), InputScaling(), (0.0,), (1.0,))


def test_bad_scaling_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="range"):
        InputScaling(method="range", minimum=5, maximum=5)
    with pytest.raises(ValueError, match="method"):
        InputScaling(method="zscore")
