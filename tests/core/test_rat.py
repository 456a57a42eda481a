"""The raster legend GDAL reads: colour table, category names and attribute table in the sidecar."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio
from helpers import make_raster, second_codes

from core import rat
from core.encode import NODATA_UINT8, NODATA_UINT16, fromto_code
from core.io import gdal_session
from core.legend import LegendEntry, binary_legend, fromto_legend
from core.models.card import SECOND_CLASSES, LandCoverClass
from core.rat import write_legend

SECOND_N = len(SECOND_CLASSES)
WATER, BUILDING = 1, 5  # SECOND class numbers


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
    with pytest.raises(ValueError, match="uint8, uint16 or uint32 raster, not Float32"):
        write_legend(prob, binary_legend())


def test_gdal_exception_mode_is_restored(tmp_path):
    from osgeo import gdal

    before = gdal.GetUseExceptions()
    path = make_raster(tmp_path / "m.tif", np.zeros((2, 2), np.uint8), NODATA_UINT8)
    write_legend(path, binary_legend())
    assert gdal.GetUseExceptions() == before
    assert gdal.GetThreadLocalConfigOption("GDAL_PAM_ENABLED", None) is None


# --- Probability style -----------------------------------------------------------------------
