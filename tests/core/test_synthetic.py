"""The realistic synthetic generator: real-looking transitions, not trivially separable, georeferenced scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio

from core import synthetic
from core.encode import fromto_codes
from core.models.card import LANDSAT_SCD_CLASSES, SECOND_CLASSES

WATER, GROUND, LOW_VEG, TREE, BUILDING = 1, 2, 3, 4, 5  # SECOND's class indices
PALETTE = np.array([c.color for c in SECOND_CLASSES], np.float64)


def _pairs(count: int, size: int = 192):
    for seed in range(count):
        landscape = synthetic.make_landscape_pair(size, size, SECOND_CLASSES, seed=seed)
        yield landscape, *synthetic.render_landscape(landscape, SECOND_CLASSES, seed=seed)


def test_transitions_are_the_realistic_ones() -> None:
    transitions: dict[tuple[int, int], int] = {}
    for landscape, _, _ in _pairs(6):
        changed = landscape.changed
        pairs, counts = np.unique(np.stack([landscape.classes_t1[changed], landscape.classes_t2[changed]]),
                                  axis=1, return_counts=True)
        for (a, b), n in zip(pairs.T.tolist(), counts.tolist(), strict=True):
            transitions[(a, b)] = transitions.get((a, b), 0) + n
    assert transitions.get((GROUND, BUILDING), 0) > 0                                  # construction
    assert transitions.get((LOW_VEG, GROUND), 0) + transitions.get((TREE, GROUND), 0) > 0  # clearing
    assert any(WATER in pair for pair in transitions)                                 # shores moved
    assert (BUILDING, WATER) not in transitions                                        # buildings do not flood
    total = sum(transitions.values())
    assert 0.02 < total / (6 * 192 * 192) < 0.5


def test_neither_colour_nor_difference_gives_the_labels() -> None:
    colour_hits = pixels = 0
    best_f1 = []
    for landscape, image1, image2 in _pairs(4):
        rgb = image1.reshape(3, -1).T.astype(np.float64)
        nearest = np.argmin(((rgb[:, None, :] - PALETTE[None]) ** 2).sum(-1), axis=1) + 1
        colour_hits += int((nearest == landscape.classes_t1.ravel()).sum())
        pixels += nearest.size
        difference = np.abs(image1.astype(np.float64) - image2).mean(axis=0).ravel()
        truth = landscape.changed.ravel()
        f1 = [2 * (d & truth).sum() / (d.sum() + truth.sum())
              for d in (difference > t for t in np.percentile(difference, np.arange(40, 100, 2)))]
        best_f1.append(max(f1))
    assert colour_hits / pixels < 0.6      # the label palette is not how classes look
    assert max(best_f1) < 0.85             # thresholding |T1 - T2| does not find the change
    assert image1.min() >= 1               # 0 stays free for nodata


def test_landsat_classes_get_their_own_roles() -> None:
    landscape = synthetic.make_landscape_pair(256, 256, LANDSAT_SCD_CLASSES, seed=3)
    assert set(np.unique(landscape.classes_t1)) <= {1, 2, 3, 4}
    assert len(np.unique(landscape.classes_t1)) >= 3


def test_scene_pair_is_georeferenced_with_t2_in_another_crs_and_nodata(tmp_path: Path) -> None:
    paths = synthetic.write_scene(tmp_path, SECOND_CLASSES, size=160, seed=1, t2_crs="EPSG:4326")
    with rasterio.open(paths.t1) as t1, rasterio.open(paths.t2) as t2, rasterio.open(paths.truth_t1) as truth:
        assert t1.crs.to_epsg() == 32633 and t2.crs.to_epsg() == 4326 and t2.nodata == 0
        assert truth.transform == t1.transform and truth.shape == t1.shape
        assert (t2.read(1) == 0).mean() > 0.05
    with rasterio.open(paths.truth_t1) as a, rasterio.open(paths.truth_t2) as b, \
            rasterio.open(paths.truth_fromto) as code, rasterio.open(paths.truth_change) as change:
        c1, c2 = a.read(1), b.read(1)
        assert np.array_equal(change.read(1), (c1 != c2).astype(np.uint8))
        assert np.array_equal(code.read(1), fromto_codes(c1, c2, c1 != c2, len(SECOND_CLASSES)))
    assert "SYNTHETIC" in (tmp_path / "README.txt").read_text()


def test_old_generator_is_unchanged_for_its_users() -> None:
    scene = synthetic.make_scene(64, 64, 6, seed=5)
    image = synthetic.render(scene.labels_t1, [c.color for c in SECOND_CLASSES], seed=1, noise=0.0)
    assert np.array_equal(image[:, 0, 0], np.array(SECOND_CLASSES[scene.labels_t1[0, 0] - 1].color))
