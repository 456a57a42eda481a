"""Comparing two land-cover maps: the matrix is the cross-tabulation, legends and codes as analysts expect."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import Resampling, reproject

from core.compare import CompareOptions, compare_classifications
from core.errors import InputError
from core.io import gdal_session
from core.products import OutputPaths

UTM = "EPSG:32633"
WORLDCOVER = {10: ("Tree cover", (0, 100, 0)), 20: ("Shrubland", (255, 187, 34)), 30: ("Grassland", (255, 255, 76)),
              40: ("Cropland", (240, 150, 255)), 50: ("Built-up", (250, 0, 0)), 80: ("Permanent water bodies",
                                                                                 (0, 100, 200))}


def write_map(path: Path, data: np.ndarray, *, crs: str = UTM, transform=None, nodata=0,
              names: dict[int, str] | None = None, colors: dict[int, tuple[int, int, int]] | None = None) -> Path:
    """A categorical GeoTIFF, optionally with category names and a colour table (as WorldCover ships)."""
    transform = transform or from_origin(500000, 4000000, 10, 10)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=data.dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(data, 1)
        if colors:
            dst.write_colormap(1, {k: (*v, 255) for k, v in colors.items()})
    if names:
        with gdal_session() as gdal:
            ds = gdal.Open(str(path))
            ds.GetRasterBand(1).SetCategoryNames([names.get(v, "") for v in range(max(names) + 1)])
            ds = None
    return path


def read(path: Path) -> tuple[np.ndarray, float]:
    with rasterio.open(path) as src:
        return src.read(1), src.nodata


def matrix_block(csv_path: Path, unit: str = "pixels") -> tuple[list[str], np.ndarray]:
    rows = list(csv.reader(io.StringIO(csv_path.read_text(encoding="utf-8"))))
    header = rows[0]
    names = header[2:-1]
    block = [r for r in rows[1:] if r[0] == unit][: len(names)]
    assert [r[1] for r in block] == names
    return names, np.array([[float(v) for v in r[2:-1]] for r in block])


def crosstab(a: np.ndarray, b: np.ndarray, valid: np.ndarray, classes: list[int]) -> np.ndarray:
    """The reference: numpy's own cross-tabulation of the aligned arrays (np.bincount of from*K+to)."""
    index = {c: i for i, c in enumerate(classes)}
    lut = np.zeros(max(max(classes), int(a.max()), int(b.max())) + 1, dtype=np.int64)
    for c, i in index.items():
        lut[c] = i
    k = len(classes)
    return np.bincount(lut[a[valid]] * k + lut[b[valid]], minlength=k * k).reshape(k, k)


@pytest.fixture
def worldcover_pair(tmp_path: Path):
    """T1 in UTM at 10 m with nodata; T2 the same landscape with changes, in Web Mercator at 7 m."""
    rng = np.random.default_rng(5)
    codes = np.array(sorted(WORLDCOVER), dtype=np.uint8)
    blocks = codes[rng.integers(0, len(codes), (12, 10))]
    t1 = np.kron(blocks, np.ones((10, 10), dtype=np.uint8))  # 120 x 100 px of 10 x 10 px fields
    t1[20:30, 30:40] = 10  # a wood ...
    t2 = t1.copy()
    t2[20:50, 30:70] = 50  # ... where a new town is built: whatever was there became Built-up
    t2[90:110, 0:40] = 10  # afforestation
    for row, col in ((60, 60), (61, 61), (70, 15), (80, 85)):  # speckle: single misclassified pixels
        t2[row, col] = 80 if t1[row, col] != 80 else 20
    t1[:5, :] = 0  # a nodata strip in T1
    names = {k: v[0] for k, v in WORLDCOVER.items()}
    colors = {k: v[1] for k, v in WORLDCOVER.items()}
    folder = tmp_path / "in"
    folder.mkdir()
    p1 = write_map(folder / "wc2020.tif", t1, names=names, colors=colors)
    # T2 in another CRS and resolution: reproject the later map by nearest neighbour.
    utm = write_map(folder / "wc2021_utm.tif", t2, names=names, colors=colors)
    with rasterio.open(utm) as src:
        from rasterio.warp import calculate_default_transform

        transform, width, height = calculate_default_transform(src.crs, "EPSG:3857", src.width, src.height,
                                                               *src.bounds, resolution=7)
        data = np.zeros((height, width), dtype=np.uint8)
        reproject(src.read(1), data, src_transform=src.transform, src_crs=src.crs, dst_transform=transform,
                  dst_crs="EPSG:3857", resampling=Resampling.nearest, src_nodata=0, dst_nodata=0)
    p2 = write_map(folder / "wc2021.tif", data, crs="EPSG:3857", transform=transform, names=names, colors=colors)
    return p1, p2


def aligned_t2(p1: Path, p2: Path) -> np.ndarray:
    """T2 on T1's grid by nearest neighbour, as an analyst would align it (rasterio's reproject)."""
    with rasterio.open(p1) as ref, rasterio.open(p2) as src:
        out = np.zeros((ref.height, ref.width), dtype=src.dtypes[0])
        reproject(src.read(1), out, src_transform=src.transform, src_crs=src.crs, dst_transform=ref.transform,
                  dst_crs=ref.crs, resampling=Resampling.nearest, src_nodata=src.nodata, dst_nodata=0)
    return out


def test_worldcover_maps_in_two_crss_give_the_cross_tabulation(tmp_path: Path, worldcover_pair) -> None:
    p1, p2 = worldcover_pair
    out = tmp_path / "out"
    out.mkdir()
    outputs = OutputPaths(fromto=out / "fromto.tif", t1_classes=out / "t1.tif", t2_classes=out / "t2.tif",
                          change_mask=out / "mask.tif", transitions_csv=out / "matrix.csv",
                          polygons=out / "changes.gpkg")
    summary = compare_classifications(p1, p2, outputs)

    a, _ = read(p1)
    b = aligned_t2(p1, p2)
    valid = (a != 0) & (b != 0)
    classes = sorted(WORLDCOVER)
    names, pixels = matrix_block(out / "matrix.csv")
    assert names == [WORLDCOVER[c][0] for c in classes]  # names from the rasters' own category names
    np.testing.assert_array_equal(pixels, crosstab(a, b, valid, classes))
    assert summary.valid_pixels == int(valid.sum())
    assert summary.changed_pixels == int((valid & (a != b)).sum()) > 0

    codes, nodata = read(out / "fromto.tif")
    assert codes.dtype == np.uint8  # 6 classes: 36 pairs fit a byte
    np.testing.assert_array_equal(codes == nodata, ~valid)  # nodata in either date is nodata
    mask, _ = read(out / "mask.tif")
    np.testing.assert_array_equal(mask[valid] == 1, a[valid] != b[valid])
    t1_classes, _ = read(out / "t1.tif")
    assert set(np.unique(t1_classes[valid])) <= set(range(1, 7))  # classes everywhere, not only inside change

    with gdal_session() as gdal:
        dataset = gdal.Open(str(out / "fromto.tif"))
        rat = dataset.GetRasterBand(1).GetDefaultRAT()
        labels = {rat.GetValueAsInt(r, 0): rat.GetValueAsString(r, 3) for r in range(rat.GetRowCount())}
        dataset = None
    present = {int(v) for v in np.unique(codes[valid])}
    assert set(labels) == present  # the legend lists only the pairs present
    tree, built = classes.index(10) + 1, classes.index(50) + 1
    assert labels[1 + (tree - 1) * 6 + (built - 1)] == "Tree cover -> Built-up"
    assert (out / "fromto.qml").read_text(encoding="utf-8").count("paletteEntry") == len(present)
    assert summary.polygons > 0 and (out / "changes.gpkg").exists()


def test_corine_codes_harmonised_by_a_mapping_table(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    level3 = np.array([111, 112, 211, 231, 311, 312, 411, 512], dtype=np.uint16)
    t1 = level3[rng.integers(0, len(level3), (60, 50))]
    t2 = np.where(rng.random(t1.shape) < 0.3, level3[rng.integers(0, len(level3), t1.shape)], t1).astype(np.uint16)
    p1 = write_map(tmp_path / "clc2012.tif", t1, nodata=65535)
    p2 = write_map(tmp_path / "clc2018.tif", t2, nodata=65535)
    mapping = tmp_path / "level1.csv"
    mapping.write_text("code,target,name\n" + "".join(f"{c},{c // 100},\n" for c in level3), encoding="utf-8")
    table = tmp_path / "level1_names.csv"
    table.write_text("code,name,colour\n1,Artificial surfaces,#e6004d\n2,Agricultural areas,#ffffa8\n"
                     "3,Forest and semi natural areas,#80ff00\n4,Wetlands,#a6a6ff\n", encoding="utf-8")
    summary = compare_classifications(
        p1, p2, OutputPaths(fromto=tmp_path / "fromto.tif", transitions_csv=tmp_path / "m.csv"),
        CompareOptions(class_table=table, mapping=mapping))
    names, pixels = matrix_block(tmp_path / "m.csv")
    assert names == ["Artificial surfaces", "Agricultural areas", "Forest and semi natural areas", "Wetlands",
                     "Class 5"]  # 5 (water) has no name: named by its code and reported
    assert summary.unnamed_codes == (5,)
    np.testing.assert_array_equal(pixels, crosstab(t1 // 100, t2 // 100, np.ones(t1.shape, bool), [1, 2, 3, 4, 5]))
    hectares = matrix_block(tmp_path / "m.csv", "hectares")[1]
    np.testing.assert_allclose(hectares, pixels * 100 / 10_000)  # 10 m pixels: 0.01 ha each


def test_more_than_255_pairs_widen_the_codes_and_one_date_only_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    t1 = rng.integers(1, 18, (40, 40)).astype(np.uint8)  # 17 classes: 289 pairs
    t2 = rng.integers(1, 19, (40, 40)).astype(np.uint8)  # class 18 appears only in T2
    p1 = write_map(tmp_path / "a.tif", t1, nodata=255)
    p2 = write_map(tmp_path / "b.tif", t2, nodata=255)
    outputs = OutputPaths(fromto=tmp_path / "f.tif", transitions_csv=tmp_path / "m.csv")
    summary = compare_classifications(p1, p2, outputs)
    codes, nodata = read(tmp_path / "f.tif")
    assert codes.dtype == np.uint16 and nodata == 65535
    names, pixels = matrix_block(tmp_path / "m.csv")
    assert len(names) == 18 and pixels[17].sum() == 0 and pixels[:, 17].sum() > 0
    np.testing.assert_array_equal(pixels, crosstab(t1, t2, np.ones(t1.shape, bool), list(range(1, 19))))
    expected = np.where(t1 != t2, 1 + (t1.astype(int) - 1) * 18 + (t2.astype(int) - 1), 0)
    np.testing.assert_array_equal(codes, expected)
    assert len(summary.transitions) == len(np.unique(expected))


def test_hundreds_of_classes_give_a_uint32_from_to_map_with_a_legend(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    t1 = rng.integers(0, 300, (30, 30)).astype(np.uint16)
    t2 = rng.integers(0, 300, (30, 30)).astype(np.uint16)
    p1 = write_map(tmp_path / "a.tif", t1, nodata=None)
    p2 = write_map(tmp_path / "b.tif", t2, nodata=None)
    compare_classifications(p1, p2, OutputPaths(fromto=tmp_path / "f.tif", transitions_csv=tmp_path / "m.csv"))
    codes, _ = read(tmp_path / "f.tif")
    assert codes.dtype == np.uint32
    classes = sorted(set(np.unique(t1)) | set(np.unique(t2)))
    np.testing.assert_array_equal(matrix_block(tmp_path / "m.csv")[1],
                                  crosstab(t1, t2, np.ones(t1.shape, bool), classes))
    with gdal_session() as gdal:
        dataset = gdal.Open(str(tmp_path / "f.tif"))
        assert dataset.GetRasterBand(1).GetDefaultRAT().GetRowCount() == len(np.unique(codes))
        dataset = None


def test_legend_from_a_qml_and_a_class_table_per_date(tmp_path: Path) -> None:
    t1 = np.array([[1, 1, 2, 2]] * 4, dtype=np.uint8)
    t2 = np.array([[7, 8, 8, 8]] * 4, dtype=np.uint8)  # T2 is another product with its own codes
    p1 = write_map(tmp_path / "own.tif", t1, nodata=255)
    p2 = write_map(tmp_path / "other.tif", t2, nodata=255)
    (tmp_path / "own.qml").write_text(
        "<qgis><pipe><rasterrenderer type='paletted'><colorPalette>"
        "<paletteEntry value='1' color='#00aa00' label='Forest' alpha='255'/>"
        "<paletteEntry value='2' color='#ffff00' label='Field' alpha='255'/>"
        "</colorPalette></rasterrenderer></pipe></qgis>", encoding="utf-8")
    table_t2 = tmp_path / "t2.csv"
    table_t2.write_text('7,Wood,"0,120,0"\n8,Houses,#ff0000\n', encoding="utf-8")
    mapping = tmp_path / "map.csv"
    mapping.write_text("7,1,,T2\n8,3,Built-up,T2\n", encoding="utf-8")
    summary = compare_classifications(p1, p2, OutputPaths(transitions_csv=tmp_path / "m.csv"),
                                      CompareOptions(class_table_t2=table_t2, mapping=mapping))
    assert [c.name for c in summary.classes] == ["Forest", "Field", "Built-up"]
    assert summary.classes[0].color == (0, 170, 0)
    assert {r.label: r.pixels for r in summary.transitions if r.value} == {"Forest -> Built-up": 4,
                                                                           "Field -> Built-up": 8}
    _, pixels = matrix_block(tmp_path / "m.csv")
    assert pixels[0, 0] == 4  # persistence on the diagonal: Forest stayed Forest (code 7 -> 1)


def test_minimum_mapping_unit_keeps_the_matrix_consistent(tmp_path: Path, worldcover_pair) -> None:
    p1, p2 = worldcover_pair
    a, _ = read(p1)
    b = aligned_t2(p1, p2)
    valid = (a != 0) & (b != 0)
    outputs = OutputPaths(fromto=tmp_path / "f.tif", transitions_csv=tmp_path / "m.csv")
    summary = compare_classifications(p1, p2, outputs, CompareOptions(min_patch_pixels=50))
    codes, _ = read(tmp_path / "f.tif")
    _, pixels = matrix_block(tmp_path / "m.csv")
    assert pixels.sum() == valid.sum()  # every valid pixel once: removed change counts as persistence
    assert pixels.sum() - np.trace(pixels) == summary.changed_pixels == int(((codes != 0) & (codes != 255)).sum())
    assert summary.changed_pixels < int((valid & (a != b)).sum())
    np.testing.assert_array_equal(pixels.sum(axis=1), crosstab(a, b, valid, sorted(WORLDCOVER)).sum(axis=1))


def test_bad_inputs_are_refused_with_the_file_named(tmp_path: Path) -> None:
    grid = np.ones((8, 8), dtype=np.uint8)
    p1 = write_map(tmp_path / "a.tif", grid)
    floats = write_map(tmp_path / "f.tif", grid.astype(np.float32), nodata=None)
    with pytest.raises(InputError, match=r"f\.tif holds float32"):
        compare_classifications(p1, floats, OutputPaths(fromto=tmp_path / "o.tif"))
    table = tmp_path / "t.csv"
    table.write_text("code,name,colour\n1,Forest,#00ff00\nforest,2,\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"t.csv, line 3"):
        compare_classifications(p1, p1, OutputPaths(fromto=tmp_path / "o.tif"), CompareOptions(class_table=table))
    with pytest.raises(InputError, match="no change_prob"):
        compare_classifications(p1, p1, OutputPaths(change_prob=tmp_path / "p.tif"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "f.tif", "t.csv"]
