"""Minimum mapping unit and polygons on finished change rasters."""

from pathlib import Path

import numpy as np
import pytest
import rasterio
from osgeo import gdal, ogr
from rasterio.transform import from_origin

from core import postprocess
from core.encode import NODATA_FLOAT32, NODATA_UINT8, NODATA_UINT16
from core.errors import Cancelled, InputError
from core.io import pixel_area_m2
from core.legend import binary_legend, fromto_legend
from core.models.card import SECOND_CLASSES
from core.postprocess import polygonize_changes, sieve_small_changes

N = len(SECOND_CLASSES)
PIXEL = 0.5  # metres


def write(path: Path, data: np.ndarray, nodata: float | None, *, crs: str = "EPSG:32633",
          transform=None) -> Path:
    transform = transform or from_origin(500000, 4000000, PIXEL, PIXEL)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=data.dtype, crs=crs, transform=transform, nodata=nodata,
                       tiled=True, blockxsize=16, blockysize=16, compress="deflate") as dst:
        dst.write(data, 1)
    return path


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def patchy_codes() -> np.ndarray:
    """A 40 x 48 from-to raster with patches of known sizes (8-connected) and a nodata block.

    * 1 px (code 7) and 3 px diagonal (code 8): removed with ``min_pixels=4``;
    * 4 px made of two codes (2 + 2): one patch, kept at 4, removed at 5;
    * a 3 x 3 island (9 px) inside a no-change hole of a 20 x 20 ring-shaped patch: kept at 9,
      removed at 10 while the ring stays (gdal_sieve would merge the island into the hole and
      the hole into the ring);
    * 6 px of code 9 split into 3 + 3 by nodata: two patches.
    """
    codes = np.zeros((40, 48), dtype=np.uint8)
    codes[1, 1] = 7
    codes[5, 5] = codes[6, 6] = codes[7, 7] = 8
    codes[1, 10:12] = 2
    codes[2, 10:12] = 3
    codes[15:35, 15:35] = 12  # ring ...
    codes[19:31, 19:31] = 0  # ... with a hole ...
    codes[24:27, 24:27] = 13  # ... holding an island
    codes[2, 40:46] = 9
    codes[0:5, 43] = NODATA_UINT8
    return codes


def test_sieve_removes_small_patches_only(tmp_path: Path) -> None:
    codes = patchy_codes()
    path = write(tmp_path / "fromto.tif", codes, NODATA_UINT8)

    removed = sieve_small_changes(path, 4)

    out = read(path)
    expected = codes.copy()
    expected[1, 1] = 0
    expected[5, 5] = expected[6, 6] = expected[7, 7] = 0
    expected[2, 40:43] = expected[2, 44:46] = 0  # the 3 + 2 halves left of and right of the nodata column
    assert removed == 1 + 3 + 3 + 2
    np.testing.assert_array_equal(out, expected)
    assert leftovers(tmp_path) == []


def test_sieve_keeps_patch_at_threshold_and_is_exact_about_islands(tmp_path: Path) -> None:
    codes = patchy_codes()
    path = write(tmp_path / "fromto.tif", codes, NODATA_UINT8)

    sieve_small_changes(path, 9)
    out = read(path)
    assert (out[24:27, 24:27] == 13).all()  # exactly 9 px: kept
    assert (out[1, 10:12] == 0).all() and (out[2, 10:12] == 0).all()  # 4 px of two codes: one patch, removed

    sieve_small_changes(path, 10)
    out = read(path)
    assert (out[24:27, 24:27] == 0).all()  # the island goes ...
    assert (out[19:31, 19:31] == 0).all()  # ... the hole stays unchanged ...
    assert (out[15:19, 15:35] == 12).all()  # ... and the ring stays
    assert (out == NODATA_UINT8).sum() == (codes == NODATA_UINT8).sum()


def test_sieve_updates_dependents_by_kind(tmp_path: Path) -> None:
    codes = patchy_codes()
    valid = codes != NODATA_UINT8
    changed = valid & (codes != 0)
    t1 = np.where(changed, 3, 0).astype(np.uint8)
    t1[~valid] = NODATA_UINT8
    mask = np.where(changed, 1, 0).astype(np.uint8)
    mask[~valid] = NODATA_UINT8
    prob = np.where(changed, 0.9, 0.1).astype(np.float32)
    prob[~valid] = NODATA_FLOAT32
    paths = [write(tmp_path / f"{name}.tif", data, nodata) for name, data, nodata in
             (("fromto", codes, NODATA_UINT8), ("t1", t1, NODATA_UINT8), ("mask", mask, NODATA_UINT8),
              ("prob", prob, NODATA_FLOAT32))]

    removed = sieve_small_changes(paths[0], 4, dependents=paths[1:])

    gone = changed & (read(paths[0]) == 0)
    assert gone.sum() == removed > 0
    for dependent, before in ((paths[1], t1), (paths[2], mask)):
        out = read(dependent)
        assert (out[gone] == 0).all()
        np.testing.assert_array_equal(out[~gone], before[~gone])
    np.testing.assert_array_equal(read(paths[3]), prob)  # the probability is what the network said


def test_sieve_connectedness_four_splits_diagonals(tmp_path: Path) -> None:
    codes = np.zeros((8, 8), dtype=np.uint16)
    codes[2, 2] = codes[3, 3] = 40
    path = write(tmp_path / "codes.tif", codes, NODATA_UINT16)
    assert sieve_small_changes(path, 2, connectedness=8) == 0
    assert sieve_small_changes(path, 2, connectedness=4) == 2
    assert not read(path).any()


def test_sieve_works_in_row_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    codes = patchy_codes()
    reference = write(tmp_path / "reference.tif", codes, NODATA_UINT8)
    assert sieve_small_changes(reference, 10) > 0
    monkeypatch.setattr(postprocess, "_CHUNK_PIXELS", 64)  # 48 px wide: one 16-row block per chunk
    path = write(tmp_path / "fromto.tif", codes, NODATA_UINT8)
    assert len(list(postprocess._row_chunks(gdal.Open(str(path))))) == 3
    sieve_small_changes(path, 10)
    np.testing.assert_array_equal(read(path), read(reference))


def test_sieve_trivial_and_bad_arguments(tmp_path: Path) -> None:
    codes = patchy_codes()
    path = write(tmp_path / "fromto.tif", codes, NODATA_UINT8)
    assert sieve_small_changes(path, 0) == 0
    assert sieve_small_changes(path, 1) == 0
    np.testing.assert_array_equal(read(path), codes)
    with pytest.raises(ValueError, match="non-negative"):
        sieve_small_changes(path, -1)
    with pytest.raises(ValueError, match="connectedness"):
        sieve_small_changes(path, 4, connectedness=6)
    other = write(tmp_path / "other.tif", np.zeros((5, 5), np.uint8), NODATA_UINT8)
    with pytest.raises(ValueError, match="share the grid"):
        sieve_small_changes(path, 4, dependents=[other])
    prob = write(tmp_path / "prob.tif", np.zeros((40, 48), np.float32), NODATA_FLOAT32)
    with pytest.raises(ValueError, match="integers"):
        sieve_small_changes(prob, 4)
    assert leftovers(tmp_path) == []


class StopAt:
    """Progress that asks to stop once a fraction is reached."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction
        self.seen: list[float] = []

    def set_progress(self, fraction: float) -> None:
        self.seen.append(fraction)

    def is_cancelled(self) -> bool:
        return bool(self.seen) and self.seen[-1] >= self.fraction


def test_sieve_cancel_leaves_raster_unchanged(tmp_path: Path) -> None:
    codes = patchy_codes()
    path = write(tmp_path / "fromto.tif", codes, NODATA_UINT8)
    with pytest.raises(Cancelled):
        sieve_small_changes(path, 4, progress=StopAt(0.3))
    np.testing.assert_array_equal(read(path), codes)
    assert leftovers(tmp_path) == []


def test_sieve_reports_progress_to_the_end(tmp_path: Path) -> None:
    path = write(tmp_path / "fromto.tif", patchy_codes(), NODATA_UINT8)
    progress = StopAt(2.0)
    sieve_small_changes(path, 4, progress=progress)
    assert progress.seen == sorted(progress.seen)
    assert progress.seen[-1] == pytest.approx(1.0)


# --- polygons --------------------------------------------------------------------------------


def features(path: Path) -> list[dict]:
    ds = ogr.Open(str(path))
    layer = ds.GetLayer(0)
    rows = []
    for feature in layer:
        row = {name: feature.GetField(name) for name in ("value", "from_class", "to_class", "label", "area_m2")}
        geometry = feature.GetGeometryRef()
        row["valid"] = geometry.IsValid()
        row["type"] = geometry.GetGeometryName()
        rows.append(row)
    return rows


def test_polygons_one_per_patch_with_attributes(tmp_path: Path) -> None:
    codes = patchy_codes()
    raster = write(tmp_path / "fromto.tif", codes, NODATA_UINT8)
    out = tmp_path / "changes.gpkg"
    entries = fromto_legend(SECOND_CLASSES)

    count = polygonize_changes(raster, out, entries)

    rows = features(out)
    assert count == len(rows)
    # 4-connected, one code each: 7 | 8 x3 (diagonal) | 2, 3 | ring 12 | island 13 | 9 left, 9 right
    assert sorted(r["value"] for r in rows) == [2, 3, 7, 8, 8, 8, 9, 9, 12, 13]
    by_value = {e.value: e for e in entries}
    for row in rows:
        entry = by_value[row["value"]]
        assert (row["label"], row["from_class"], row["to_class"]) == (entry.label, entry.from_class, entry.to_class)
        assert row["valid"] and row["type"] == "POLYGON"
    ring = next(r for r in rows if r["value"] == 12)
    assert ring["area_m2"] == pytest.approx((400 - 144) * PIXEL * PIXEL)
    assert sum(r["area_m2"] for r in rows) == pytest.approx(((codes != 0) & (codes != NODATA_UINT8)).sum() * 0.25)
    ds = ogr.Open(str(out))
    assert ds.GetLayer(0).GetName() == "changes"
    assert ds.GetLayer(0).GetSpatialRef().GetAuthorityCode(None) == "32633"
    assert leftovers(tmp_path) == []


def test_polygons_eight_connected_join_diagonals(tmp_path: Path) -> None:
    raster = write(tmp_path / "fromto.tif", patchy_codes(), NODATA_UINT8)
    out = tmp_path / "changes.gpkg"
    polygonize_changes(raster, out, fromto_legend(SECOND_CLASSES), connectedness=8)
    assert sorted(r["value"] for r in features(out)) == [2, 3, 7, 8, 9, 9, 12, 13]


@pytest.mark.parametrize("name", ["changes.shp", "changes.geojson", "changes.fgb"])
def test_polygons_other_formats_by_extension(tmp_path: Path, name: str) -> None:
    mask = np.zeros((10, 10), np.uint8)
    mask[2:4, 2:5] = 1
    mask[7:9, 7:9] = 1
    raster = write(tmp_path / "mask.tif", mask, NODATA_UINT8)
    out = tmp_path / name
    assert polygonize_changes(raster, out, binary_legend()) == 2
    rows = features(out)
    assert sorted(r["area_m2"] for r in rows) == pytest.approx([1.0, 1.5])
    assert {r["label"] for r in rows} == {"Change"}
    assert all(r["from_class"] is None and r["to_class"] is None for r in rows)
    assert leftovers(tmp_path) == []


def test_polygons_replace_an_existing_file(tmp_path: Path) -> None:
    mask = np.zeros((10, 10), np.uint8)
    raster = write(tmp_path / "mask.tif", mask, NODATA_UINT8)
    out = tmp_path / "changes.gpkg"
    out.write_text("old")
    assert polygonize_changes(raster, out, binary_legend()) == 0
    assert ogr.Open(str(out)).GetLayer(0).GetFeatureCount() == 0


def test_polygon_areas_on_a_geographic_grid_match_the_engine(tmp_path: Path) -> None:
    mask = np.zeros((20, 20), np.uint8)
    mask[3:9, 4:10] = 1
    transform = from_origin(10.0, 60.0, 0.001, 0.001)
    raster = write(tmp_path / "mask.tif", mask, NODATA_UINT8, crs="EPSG:4326", transform=transform)
    out = tmp_path / "changes.gpkg"
    polygonize_changes(raster, out, binary_legend())
    (row,) = features(out)
    expected = 6 * pixel_area_m2(rasterio.crs.CRS.from_epsg(4326), transform, np.arange(3, 9)).sum()
    assert row["area_m2"] == pytest.approx(expected, rel=1e-6)
    assert 36 * 6000 < row["area_m2"] < 36 * 6300  # 36 px of about 55.7 m x 111.4 m at 60 N


def test_polygons_refuse_unknown_format_and_cancel_cleanly(tmp_path: Path) -> None:
    raster = write(tmp_path / "fromto.tif", patchy_codes(), NODATA_UINT8)
    with pytest.raises(InputError, match="no vector format"):
        polygonize_changes(raster, tmp_path / "changes.xyz123", fromto_legend(SECOND_CLASSES))
    with pytest.raises(InputError, match="output folder does not exist"):
        polygonize_changes(raster, tmp_path / "missing" / "changes.gpkg", fromto_legend(SECOND_CLASSES))
    with pytest.raises(Cancelled):
        polygonize_changes(raster, tmp_path / "changes.gpkg", fromto_legend(SECOND_CLASSES), progress=StopAt(0.2))
    assert not (tmp_path / "changes.gpkg").exists()
    assert leftovers(tmp_path) == []
