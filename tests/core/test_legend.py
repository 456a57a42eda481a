"""Legends on finished rasters: colour table, category names, RAT, QGIS styles, CSV."""

import csv
import io
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from core import colors, rat
from core.encode import NODATA_UINT8, NODATA_UINT16, TransitionCounter, fromto_code, fromto_codes
from core.io import gdal_session
from core.legend import LegendEntry, binary_legend, class_legend, fromto_legend
from core.matrix import TransitionRow, transition_table_rows, write_transition_matrix
from core.models.card import LANDSAT_SCD_CLASSES, SECOND_CLASSES, LandCoverClass
from core.qml import write_probability_style
from core.rat import write_legend

SECOND_N = len(SECOND_CLASSES)
WATER, BUILDING = 1, 5  # SECOND class numbers


def make_raster(path, data, nodata):
    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1, dtype=data.dtype,
        crs="EPSG:32633", transform=from_origin(500000, 4000000, 0.5, 0.5), nodata=nodata,
        tiled=True, blockxsize=16, blockysize=16, compress="deflate",
    ) as dst:
        dst.write(data, 1)
    return path


def second_codes():
    """A 32 x 40 from-to raster with every SECOND code, no-change and a nodata corner."""
    rng = np.random.default_rng(7)
    c1 = rng.integers(1, SECOND_N + 1, (32, 40))
    c2 = rng.integers(1, SECOND_N + 1, (32, 40))
    changed = rng.random((32, 40)) > 0.4
    codes = fromto_codes(c1, c2, changed, SECOND_N)
    codes[0, :SECOND_N * SECOND_N + 1] = np.arange(SECOND_N * SECOND_N + 1)
    valid = np.ones(codes.shape, bool)
    valid[-3:, -3:] = False
    codes[~valid] = NODATA_UINT8
    counter = TransitionCounter(SECOND_N)
    counter.add(codes, valid, 0.25)
    return codes, counter


def read_back(path):
    """What a fresh GDAL open reports: category names, colour table, RAT."""
    with gdal_session() as gdal:
        ds = gdal.Open(str(path))
        band = ds.GetRasterBand(1)
        # Touch the RAT first: GDAL 3.6's GTiff loads the .aux.xml lazily and
        # GetCategoryNames() as the very first call does not trigger the load.
        rat = band.GetDefaultRAT()
        table = band.GetColorTable()
        names = band.GetCategoryNames()
        colors = [table.GetColorEntry(i) for i in range(table.GetCount())]
        columns = [rat.GetNameOfCol(i) for i in range(rat.GetColumnCount())]
        rows = [
            {columns[c]: rat.GetValueAsString(r, c) for c in range(rat.GetColumnCount())}
            for r in range(rat.GetRowCount())
        ]
        table_type = rat.GetTableType()
        thematic = gdal.GRTT_THEMATIC
        ds = None
    return names, colors, columns, rows, table_type == thematic


def parse_qml(path):
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE qgis")
    return ET.fromstring(text)


def lab_distance(a, b):
    la, lb = colors.srgb_to_lab(np.array([a, b]))
    return float(np.linalg.norm(la - lb))


# --- Legend content ----------------------------------------------------------------------------

def test_fromto_legend_labels_and_codes():
    entries = fromto_legend(SECOND_CLASSES)
    assert [e.value for e in entries] == list(range(SECOND_N * SECOND_N + 1))
    assert (entries[0].label, entries[0].alpha) == ("No change", 0)
    e = entries[fromto_code(WATER, BUILDING, SECOND_N)]
    assert (e.label, e.from_class, e.to_class, e.alpha) == ("Water -> Building", "Water", "Building", 255)
    diag = entries[fromto_code(WATER, WATER, SECOND_N)]
    assert diag.label == "Changed (Water, class unresolved)"
    assert all(x.label.isascii() for x in entries)
    assert len(fromto_legend(LANDSAT_SCD_CLASSES)) == 17


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


def test_class_and_binary_legends():
    entries = class_legend(LANDSAT_SCD_CLASSES)
    assert [(e.value, e.label) for e in entries] == [(0, "No change"), (1, "Farmland"), (2, "Desert"),
                                                     (3, "Building"), (4, "Water")]
    assert entries[0].alpha == 0
    assert entries[3].color == (230, 30, 100)
    binary = binary_legend((255, 0, 255))
    assert [(e.value, e.label, e.alpha) for e in binary] == [(0, "No change", 0), (1, "Change", 255)]
    assert binary[1].color == (255, 0, 255)
    assert LegendEntry(1, "x", [1, 2, 3]).color == (1, 2, 3)  # JSON lists are normalised
    with pytest.raises(ValueError, match="alpha"):
        LegendEntry(1, "x", (0, 0, 0), alpha=300)


# --- Raster legends ----------------------------------------------------------------------------

def test_write_legend_reads_back_with_gdal_and_rasterio(tmp_path):
    codes, counter = second_codes()
    path = make_raster(tmp_path / "fromto.tif", codes, NODATA_UINT8)
    entries = fromto_legend(SECOND_CLASSES)
    files = write_legend(path, entries, stats=counter.stats())

    assert files.warnings == ()
    assert files.aux_xml == tmp_path / "fromto.tif.aux.xml"
    assert files.qml == tmp_path / "fromto.qml"
    names, colors, columns, rows, thematic = read_back(path)

    code = fromto_code(WATER, BUILDING, SECOND_N)
    assert names[0] == "No change"
    assert names[code] == "Water -> Building"
    assert len(names) == SECOND_N * SECOND_N + 1
    assert len(colors) == 256
    assert colors[code] == (*entries[code].color, 255)
    assert colors[0] == (255, 255, 255, 0)  # no change is transparent
    assert colors[NODATA_UINT8] == (0, 0, 0, 0)  # so are unused values

    assert columns == list(rat.RAT_COLUMNS)
    assert thematic
    assert len(rows) == len(entries)
    row = rows[code]
    assert (row["Value"], row["From"], row["To"], row["Label"]) == (str(code), "Water", "Building",
                                                                     "Water -> Building")
    assert [int(row[c]) for c in ("Red", "Green", "Blue", "Alpha")] == [*entries[code].color, 255]
    assert int(rows[0]["Alpha"]) == 0
    assert int(row["Count"]) == counter.count(code) == int((codes == code).sum())
    assert float(row["Area_ha"]) == pytest.approx(counter.count(code) * 0.25 / 10_000)
    assert sum(int(r["Count"]) for r in rows) == codes.size - 9  # nodata corner not counted

    with rasterio.open(path) as src:
        colormap = src.colormap(1)
        assert colormap[code] == (*entries[code].color, 255)
        assert colormap[0] == (255, 255, 255, 0)
        assert src.nodata == NODATA_UINT8
        np.testing.assert_array_equal(src.read(1), codes)  # pixels untouched

    palette = parse_qml(files.qml).find("pipe/rasterrenderer")
    assert palette.get("type") == "paletted"
    items = palette.findall("colorPalette/paletteEntry")
    assert [int(i.get("value")) for i in items] == [e.value for e in entries]
    assert items[0].get("alpha") == "0"
    assert items[0].get("label") == "No change"
    assert items[code].get("label") == "Water -> Building"
    assert items[code].get("color") == "#{:02x}{:02x}{:02x}".format(*entries[code].color)
    assert all(i.get("alpha") == "255" for i in items[1:])


def test_embedded_colour_table_travels_with_the_file_without_alpha(tmp_path):
    data = np.array([[0, 1], [1, NODATA_UINT8]], dtype=np.uint8)
    path = make_raster(tmp_path / "mask.tif", data, NODATA_UINT8)
    files = write_legend(path, binary_legend(), embed_color_table=True)
    assert files.warnings == ()
    files.aux_xml.unlink()  # the file copied on its own
    with rasterio.open(path) as src:
        # RGB kept, alpha not: TIFF colour maps have no alpha channel.
        assert src.colormap(1)[0] == (255, 255, 255, 255)
        assert src.colormap(1)[1] == (255, 0, 0, 255)
    write_legend(path, binary_legend())
    names, _, _, rows, _ = read_back(path)
    assert names[:2] == ["No change", "Change"]
    assert "Count" not in rows[0]  # no stats, no made-up counts


def test_sidecar_colour_table_wins_over_an_embedded_one(tmp_path):
    path = make_raster(tmp_path / "mask.tif", np.array([[0, 1]], dtype=np.uint8), NODATA_UINT8)
    write_legend(path, binary_legend((0, 0, 255)), embed_color_table=True)
    files = write_legend(path, binary_legend())
    assert files.warnings == ()
    with rasterio.open(path) as src:
        assert src.colormap(1)[0] == (255, 255, 255, 0)
        assert src.colormap(1)[1] == (255, 0, 0, 255)


def test_uint16_fromto_legend(tmp_path):
    classes = tuple(LandCoverClass(f"Class {i}", (i * 13 % 256, i * 57 % 256, i * 101 % 256)) for i in range(16))
    n = len(classes)
    codes = np.arange(n * n + 1, dtype=np.uint16).reshape(1, -1)
    path = make_raster(tmp_path / "big.tif", codes, NODATA_UINT16)
    entries = fromto_legend(classes)
    files = write_legend(path, entries)
    assert files.warnings == ()
    names, colors, _, rows, _ = read_back(path)
    assert len(names) == n * n + 1
    assert names[n * n] == "Changed (Class 15, class unresolved)"
    assert names[2] == "Class 0 -> Class 1"
    assert len(rows) == n * n + 1
    assert len(colors) == n * n + 1
    assert colors[n * n] == (*entries[-1].color, 255)
    assert len(parse_qml(files.qml).findall("pipe/rasterrenderer/colorPalette/paletteEntry")) == n * n + 1


def test_stale_sidecar_is_replaced_and_huge_counts_fit(tmp_path):
    path = make_raster(tmp_path / "mask.tif", np.array([[0, 1]], dtype=np.uint8), NODATA_UINT8)
    stale = tmp_path / "mask.tif.aux.xml"
    stale.write_text("<PAMDataset><Metadata><MDI key='STALE'>1</MDI></Metadata></PAMDataset>")
    write_legend(path, binary_legend(), stats={0: (3_000_000_000, 7.5e8), 1: (5, 1.25)})
    assert "STALE" not in stale.read_text()
    _, _, _, rows, _ = read_back(path)
    assert float(rows[0]["Count"]) == 3e9  # beyond int32: stored as a real column
    assert float(rows[0]["Area_ha"]) == pytest.approx(75_000)
    assert float(rows[1]["Count"]) == 5


def test_write_legend_rejects_values_the_raster_cannot_hold(tmp_path):
    path = make_raster(tmp_path / "m.tif", np.zeros((2, 2), np.uint8), NODATA_UINT8)
    with pytest.raises(ValueError, match="does not fit"):
        write_legend(path, [LegendEntry(300, "too big", (0, 0, 0))])
    with pytest.raises(ValueError, match="unique"):
        write_legend(path, [LegendEntry(1, "a", (0, 0, 0)), LegendEntry(1, "b", (0, 0, 0))])
    prob = make_raster(tmp_path / "p.tif", np.zeros((2, 2), np.float32), -1.0)
    with pytest.raises(ValueError, match="uint8 or uint16"):
        write_legend(prob, binary_legend())


def test_gdal_exception_mode_is_restored(tmp_path):
    from osgeo import gdal

    before = gdal.GetUseExceptions()
    path = make_raster(tmp_path / "m.tif", np.zeros((2, 2), np.uint8), NODATA_UINT8)
    write_legend(path, binary_legend())
    assert gdal.GetUseExceptions() == before
    assert gdal.GetThreadLocalConfigOption("GDAL_PAM_ENABLED", None) is None


# --- Probability style -----------------------------------------------------------------------

def test_probability_style(tmp_path):
    path = make_raster(tmp_path / "prob.tif", np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4), -1.0)
    qml = write_probability_style(path)
    assert qml == tmp_path / "prob.qml"
    renderer = parse_qml(qml).find("pipe/rasterrenderer")
    assert renderer.get("type") == "singlebandpseudocolor"
    assert (renderer.get("classificationMin"), renderer.get("classificationMax")) == ("0", "1")
    shader = renderer.find("rastershader/colorrampshader")
    assert shader.get("colorRampType") == "INTERPOLATED"
    values = [float(i.get("value")) for i in shader.findall("item")]
    assert values[0] == 0.0 and values[-1] == 1.0 and values == sorted(values)


# --- Transition matrix -----------------------------------------------------------------------

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
