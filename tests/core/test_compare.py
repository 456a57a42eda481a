"""Comparing two land-cover maps: the matrix is the cross-tabulation, legends and codes as analysts expect."""

from __future__ import annotations

import contextlib
import csv
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from helpers import WORLDCOVER, aligned_t2, crosstab, matrix_block, write_map, write_worldcover_pair

from core import compare as compare_module
from core.classtable import ClassInfo
from core.compare import CompareOptions, compare_classifications
from core.errors import Cancelled, InputError
from core.io import gdal_session
from core.products import OutputPaths
from core.progress import Progress


class Log(Progress):
    """Keeps the run's log lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)

    def warnings(self) -> list[str]:
        return [line for line in self.lines if line.startswith("warning:")]


def read(path: Path) -> tuple[np.ndarray, float]:
    with rasterio.open(path) as src:
        return src.read(1), src.nodata

@pytest.fixture
def worldcover_pair(tmp_path: Path) -> tuple[Path, Path]:
    return write_worldcover_pair(tmp_path / "in")


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
    with pytest.raises(InputError, match=r"T2 \(.*f\.tif\), band 1, holds float32"):
        compare_classifications(p1, floats, OutputPaths(fromto=tmp_path / "o.tif"))
    table = tmp_path / "t.csv"
    table.write_text("code,name,colour\n1,Forest,#00ff00\nforest,2,\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"t.csv, line 3"):
        compare_classifications(p1, p1, OutputPaths(fromto=tmp_path / "o.tif"), CompareOptions(class_table=table))
    with pytest.raises(InputError, match="no change_prob"):
        compare_classifications(p1, p1, OutputPaths(change_prob=tmp_path / "p.tif"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "f.tif", "t.csv"]


def test_names_and_colours_from_a_raster_attribute_table(tmp_path: Path) -> None:
    t1 = write_map(tmp_path / "a.tif", np.array([[11, 11, 21, 21]] * 2, dtype=np.uint8), nodata=255)
    t2 = write_map(tmp_path / "b.tif", np.array([[11, 21, 21, 21]] * 2, dtype=np.uint8), nodata=255)
    for path in (t1, t2):
        with gdal_session() as gdal:
            dataset = gdal.Open(str(path))
            rat = gdal.RasterAttributeTable()
            for name, kind, usage in (("VALUE", gdal.GFT_Integer, gdal.GFU_MinMax),
                                      ("CLASS_NAME", gdal.GFT_String, gdal.GFU_Name),
                                      ("R", gdal.GFT_Integer, gdal.GFU_Red), ("G", gdal.GFT_Integer, gdal.GFU_Green),
                                      ("B", gdal.GFT_Integer, gdal.GFU_Blue)):
                rat.CreateColumn(name, kind, usage)
            for row, (code, name, rgb) in enumerate(((11, "Open Water", (70, 107, 159)),
                                                     (21, "Developed, Open Space", (222, 197, 197)))):
                rat.SetValueAsInt(row, 0, code)
                rat.SetValueAsString(row, 1, name)
                for column, value in enumerate(rgb, start=2):
                    rat.SetValueAsInt(row, column, value)
            dataset.GetRasterBand(1).SetDefaultRAT(rat)
            dataset = None
    summary = compare_classifications(t1, t2, OutputPaths(transitions_csv=tmp_path / "m.csv"))
    assert [(c.name, c.color) for c in summary.classes] == [("Open Water", (70, 107, 159)),
                                                            ("Developed, Open Space", (222, 197, 197))]
    assert [r.label for r in summary.transitions if r.value] == ["Open Water -> Developed, Open Space"]


@pytest.mark.parametrize("layout", ["runs", "noise"])
def test_a_code_held_by_one_pixel_is_a_class_whatever_the_map_looks_like(tmp_path: Path, layout: str) -> None:
    # The first pass reads only the end of each run of one code: a lone pixel at a row's start,
    # at the band's last pixel or beside nodata must still be found, in field-like and noise-like maps.
    rng = np.random.default_rng(3)
    if layout == "runs":
        a = np.kron(rng.choice([10, 20], (6, 6)), np.ones((8, 8))).astype(np.uint8)
    else:
        a = rng.choice([10, 20], (48, 48)).astype(np.uint8)
    b = a.copy()
    a[0, 0], a[-1, -1], a[20, 5] = 30, 40, 50
    a[20, 6] = 0  # nodata right after the lone 50
    b[7, 0], b[-1, -1] = 60, 70
    p1, p2 = write_map(tmp_path / "t1.tif", a), write_map(tmp_path / "t2.tif", b)
    out = tmp_path / "out"
    out.mkdir()
    summary = compare_classifications(p1, p2, OutputPaths(transitions_csv=out / "matrix.csv"))
    assert summary.codes == (10, 20, 30, 40, 50, 60, 70)
    assert summary.valid_pixels == a.size - 1


# --- which band holds the class codes --------------------------------------------------------

@pytest.fixture
def stack_and_map(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """T1 a 2-band stack whose band 2 is the land-cover map (band 1 other codes), T2 a one-band map."""
    rng = np.random.default_rng(4)
    classes = np.kron(rng.choice([10, 20, 30], (4, 5)), np.ones((6, 6))).astype(np.uint8)
    later = np.where(rng.random(classes.shape) < 0.2, 40, classes).astype(np.uint8)
    other = rng.choice([1, 2], classes.shape).astype(np.uint8)
    t1 = write_map(tmp_path / "stack.tif", np.stack([other, classes]), nodata=None)
    t2 = write_map(tmp_path / "later.tif", later, nodata=None)
    return t1, t2, classes, later


def test_the_chosen_band_of_a_multi_band_map_is_compared_without_a_warning(tmp_path: Path, stack_and_map) -> None:
    t1, t2, classes, later = stack_and_map
    log = Log()
    summary = compare_classifications(t1, t2, OutputPaths(transitions_csv=tmp_path / "m.csv"), progress=log,
                                      band_t1=2)
    assert summary.codes == (10, 20, 30, 40) and summary.bands == (2, 1)
    _, pixels = matrix_block(tmp_path / "m.csv")
    everywhere = np.ones(classes.shape, dtype=bool)
    np.testing.assert_array_equal(pixels, crosstab(classes, later, everywhere, [10, 20, 30, 40]))
    assert not [line for line in log.warnings() if "band" in line]
    assert any("stack.tif): band 2 of 2 is compared" in line for line in log.lines)


def test_a_multi_band_map_read_on_band_1_by_default_says_so_and_how_to_choose(tmp_path: Path, stack_and_map) -> None:
    t1, t2, _, _ = stack_and_map
    log = Log()
    summary = compare_classifications(t1, t2, OutputPaths(transitions_csv=tmp_path / "m.csv"), progress=log)
    assert set(summary.codes) >= {1, 2} and summary.bands == (1, 1)  # band 1, as before
    (warning,) = [line for line in log.warnings() if "band" in line]
    assert "T1" in warning and "stack.tif" in warning and "2 bands" in warning and "band 1 is compared" in warning
    assert "BAND_T1" in warning and "band_t1=" in warning and "rendered picture" not in warning


def test_a_map_marked_red_green_blue_may_be_a_rendered_picture_whichever_band(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    codes = rng.choice([1, 2, 3], (24, 24))
    palette = np.array([[0, 0, 0], [34, 139, 34], [250, 230, 160], [200, 0, 0]], dtype=np.uint8)
    picture = write_map(tmp_path / "rendered.tif", np.moveaxis(palette[codes], -1, 0), nodata=None)
    later = write_map(tmp_path / "later.tif", codes.astype(np.uint8), nodata=None)
    for band, says_unchosen in ((None, True), (1, False)):
        log = Log()
        compare_classifications(picture, later, OutputPaths(transitions_csv=tmp_path / "m.csv"), progress=log,
                                options=CompareOptions(overwrite=True), band_t1=band)
        (warning,) = [line for line in log.warnings() if "rendered picture" in line]
        assert "rendered.tif" in warning and "red, green and blue" in warning
        assert ("no band was chosen" in warning) == says_unchosen


def test_a_band_the_raster_does_not_have_is_refused_naming_the_file_and_its_bands(tmp_path: Path,
                                                                                  stack_and_map) -> None:
    t1, t2, _, _ = stack_and_map
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InputError, match=r"band 3 was requested for T1 \(.*stack\.tif\), which has 2 bands"):
        compare_classifications(t1, t2, OutputPaths(fromto=out / "f.tif"), band_t1=3)
    with pytest.raises(InputError, match=r"band 2 was requested for T2 \(.*later\.tif\), which has 1 band;"):
        compare_classifications(t1, t2, OutputPaths(fromto=out / "f.tif"), band_t1=2, band_t2=2)
    assert list(out.iterdir()) == []


def test_a_floating_point_band_is_refused_naming_the_band(tmp_path: Path, stack_and_map) -> None:
    t1, _, classes, _ = stack_and_map
    image = write_map(tmp_path / "reflectance.tif", np.stack([classes, classes]).astype(np.float32) / 7, nodata=None)
    with pytest.raises(InputError, match=r"T2 \(.*reflectance\.tif\), band 2, holds float32 values"):
        compare_classifications(t1, image, OutputPaths(fromto=tmp_path / "f.tif"), band_t1=2, band_t2=2)


def test_the_legend_is_read_from_the_chosen_band(tmp_path: Path, stack_and_map) -> None:
    # A .qml beside a stack styles one band: it names that band's codes, not another band's.
    t1, t2, _, _ = stack_and_map
    t1.with_suffix(".qml").write_text(
        '<qgis><pipe><rasterrenderer type="paletted" band="1"><colorPalette>'
        '<paletteEntry value="10" label="Styled band 1" color="#ff0000" alpha="255"/>'
        '</colorPalette></rasterrenderer></pipe></qgis>', encoding="utf-8")
    summary = compare_classifications(t1, t2, OutputPaths(transitions_csv=tmp_path / "m.csv"), band_t1=2)
    assert summary.classes[0].name == "Class 10"
    t1.with_suffix(".qml").write_text(t1.with_suffix(".qml").read_text().replace('band="1"', 'band="2"'))
    summary = compare_classifications(t1, t2, OutputPaths(transitions_csv=tmp_path / "m.csv"), band_t1=2,
                                      options=CompareOptions(overwrite=True))
    assert summary.classes[0].name == "Styled band 1"


@contextlib.contextmanager
def _fails_after(seconds: int) -> Iterator[None]:
    """Turn a hang into a failure: SIGALRM raises in the test's own thread after ``seconds``."""

    def hung(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _many_codes(folder: Path, count: int) -> tuple[Path, Path]:
    """Two maps of ``count`` codes without any legend, each code on one pixel at least."""
    side = int(np.ceil(np.sqrt(count)))
    t1 = (np.arange(side * side) % count + 1).reshape(side, side).astype(np.uint16)
    t2 = np.random.default_rng(1).permutation(t1.ravel()).reshape(side, side)
    return write_map(folder / "a.tif", t1), write_map(folder / "b.tif", t2)


def test_thousands_of_codes_without_a_legend_get_distinct_colours_and_finish(tmp_path: Path) -> None:
    # 1,651 codes or more used to loop for ever: the generated colours repeat after 1,650
    p1, p2 = _many_codes(tmp_path, 1699)
    with _fails_after(120):
        summary = compare_classifications(p1, p2, OutputPaths(fromto=tmp_path / "f.tif"))
    assert len(summary.classes) == 1699
    assert len({c.color for c in summary.classes}) == 1699


def test_more_classes_than_a_comparison_takes_are_refused_saying_why(tmp_path: Path) -> None:
    most = compare_module.MAX_CLASSES
    p1, p2 = _many_codes(tmp_path, most + 1)
    with _fails_after(60), pytest.raises(InputError, match=rf"hold {most + 1:,} distinct class codes .* at most "
                                                           rf"{most:,} classes.* mapping table"):
        compare_classifications(p1, p2, OutputPaths(fromto=tmp_path / "f.tif"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif"]


def test_a_cancel_while_the_products_are_finished_stops_and_leaves_nothing(tmp_path: Path, worldcover_pair) -> None:
    class CancelOnceRowsAreDone(Progress):
        """Cancels when the bar passes the rows' share, i.e. while legends, matrix and polygons are made."""

        def __init__(self) -> None:
            self.value = 0.0

        def set_progress(self, fraction: float) -> None:
            self.value = fraction

        def is_cancelled(self) -> bool:
            return self.value >= 0.99

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(Cancelled):
        compare_classifications(*worldcover_pair, OutputPaths(fromto=out / "f.tif", transitions_csv=out / "m.csv"),
                                progress=CancelOnceRowsAreDone())
    assert not list(out.iterdir())


@pytest.mark.parametrize(("name", "shown"), [("Forest\x1b[31m", r"'\x1b'"), ("Water\x07", r"'\x07'"),
                                             ("Crop\x9b31m", r"'\x9b'")], ids=["ansi-escape", "bell", "c1-csi"])
def test_class_names_with_control_characters_are_refused_as_a_model_card_refuses_them(tmp_path: Path, name: str,
                                                                                      shown: str) -> None:
    # they reached report.html, report.csv, the legends and the log as they were
    p1 = write_map(tmp_path / "a.tif", np.array([[1, 1, 2, 2]] * 2, dtype=np.uint8))
    p2 = write_map(tmp_path / "b.tif", np.array([[1, 2, 2, 2]] * 2, dtype=np.uint8))
    outputs = OutputPaths(fromto=tmp_path / "f.tif", transitions_csv=tmp_path / "m.csv")
    table = tmp_path / "classes.csv"
    with table.open("w", encoding="utf-8", newline="") as stream:
        csv.writer(stream).writerows([["code", "name", "colour"], [1, name, "#00ff00"], [2, "Built", "#ff0000"]])
    with pytest.raises(InputError, match=rf"class table .*classes.csv, line 2: the class name .* holds a control "
                                         rf"character \({re.escape(shown)}\); remove it"):
        compare_classifications(p1, p2, outputs, CompareOptions(class_table=table))
    mapping = tmp_path / "mapping.csv"
    with mapping.open("w", encoding="utf-8", newline="") as stream:
        csv.writer(stream).writerows([[1, 1, name], [2, 2, "Built"]])
    with pytest.raises(InputError, match=r"mapping table .*mapping.csv, line 1: the class name .* control character"):
        compare_classifications(p1, p2, outputs, CompareOptions(mapping=mapping))
    # a raster's own legend (or a layer's style) is held to the same rule
    with pytest.raises(InputError, match=r"code 1 in the legend of T1 or T2: the class name .* control character .* "
                                         r"give a class table that names code 1"):
        compare_classifications(p1, p2, outputs, CompareOptions(legend_t1={1: ClassInfo(name)}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif", "classes.csv", "mapping.csv"]
