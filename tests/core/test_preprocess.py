"""Scaling any input data type to what the network was trained on."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import InputError
from core.models.card import InputScaling
from core.preprocess import far_from_training, plan_scaling

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


def test_statistics_scaling_takes_reflectance_in_its_own_units_never_by_255() -> None:
    """Sentinel-2 L2A: uint16 reflectance x 10000, normalised by statistics in those units."""
    image = np.array([[[0, 1000, 4000, 30000]]] * 2, dtype=np.float32)
    plan = plan_scaling(("uint16", "uint16"), image, np.ones((1, 4), bool), InputScaling(method="statistics"),
                        (1000.0, 2000.0), (500.0, 1000.0))
    out = plan.apply(image.copy())
    np.testing.assert_allclose(out[0, 0], [-2, 0, 6, 58])  # no stretch, no clipping at 255
    np.testing.assert_allclose(out[1, 0], [-2, -1, 2, 28])
    assert "own units" in plan.description
    # 8-bit imagery of such a model is in its own units too: not taken "as is" and re-read as 0..255
    eight = plan_scaling(("uint8", "uint8"), image, np.ones((1, 4), bool), InputScaling(method="statistics"),
                         (1000.0, 2000.0), (500.0, 1000.0))
    np.testing.assert_allclose(eight.apply(image.copy()), out)


def test_statistics_scaling_applies_the_files_declared_scale_and_offset() -> None:
    """GDAL's value = raw * scale + offset: Landsat Collection 2 surface reflectance (x 0.0000275 - 0.2)."""
    raw = np.array([[[7273, 10909, 43636]]], dtype=np.float32)
    plan = plan_scaling(("uint16",), raw, np.ones((1, 3), bool), InputScaling(method="statistics"), (0.0,), (0.1,),
                        file_scales=[(0.0000275, -0.2)])
    np.testing.assert_allclose(plan.apply(raw.copy())[0, 0], [0.0, 1.0, 10.0], atol=1e-3)
    assert "x 2.75e-05 + -0.2" in plan.description


def test_a_scene_in_other_units_than_the_training_imagery_is_flagged() -> None:
    trained = InputScaling(method="statistics")
    valid = np.ones((1, 100), bool)
    reflectance_0_1 = np.random.default_rng(0).uniform(0.02, 0.4, (2, 1, 100)).astype(np.float32)
    plan = plan_scaling(("float32",) * 2, reflectance_0_1, valid, trained, (1200.0, 2500.0), (600.0, 900.0))
    warnings = far_from_training(plan, reflectance_0_1, valid, "T1 (s2.tif)")
    assert len(warnings) == 2 and warnings[0].startswith("T1 (s2.tif): input band 1 has typical value 0.2")
    assert "other units" in warnings[0] and "trained on 1200 +- 600" in warnings[0]
    same_units = reflectance_0_1 * 10000
    assert far_from_training(plan, same_units, valid, "T1") == []
