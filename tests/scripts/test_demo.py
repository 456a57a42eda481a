"""`make demo`'s steps, run end to end on a tiny set so its commands never go stale.

The real demo trains for minutes; ``--smoke`` runs the very same commands (synthetic, train,
export, the plugin zip under qgis_process, the PyQGIS print layout, the scoring) with a tiny
data set and one epoch. What is checked is what the demo promises an analyst: every output in
the one results folder, the map labelled "from -> to", the model labelled as a demo trained on
synthetic data, the reproducing command, the scores, and a second run that reuses the model.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

pytestmark = pytest.mark.qgis

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import demo  # noqa: E402


def run_demo(workdir: Path) -> str:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--smoke", "--workdir", str(workdir)],
                            cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.skipif(not demo.QGIS_PROCESS.exists(), reason=f"{demo.QGIS_PROCESS} is not installed")
def test_smoke_demo_writes_every_output_and_reuses_its_model(tmp_path):
    first = run_demo(tmp_path)

    results = tmp_path / "results"
    for name in ("fromto.tif", "fromto.qml", "t1_classes.tif", "t2_classes.tif", "change_polygons.gpkg",
                 "report.html", "report.csv", "map.png"):
        assert (results / name).stat().st_size > 0, name
    assert "<svg" in (results / "report.html").read_text(encoding="utf-8") or \
        "<img" in (results / "report.html").read_text(encoding="utf-8")
    fromto = gdal.Open(str(results / "fromto.tif"))  # kept alive while its band is used
    band = fromto.GetRasterBand(1)
    band.GetDefaultRAT()  # GDAL 3.6 reads the .aux.xml lazily
    assert "Low vegetation -> Building" in band.GetCategoryNames()
    png = gdal.Open(str(results / "map.png"))
    assert png.RasterXSize > 600 and png.RasterCount >= 3
    assert np.std(png.ReadAsArray()[:3].astype(float)) > 10  # a drawn map, not a blank page

    assert "python -m training_cli train --data" in first and "--model gapl_scd" in first
    assert demo.DEMO_LABEL in first  # the card's label, as the log line of qgis_process shows it
    assert "qgis_process log: model:" in first
    assert demo.DEMO_LABEL in (results / "report.html").read_text(encoding="utf-8")
    assert "F_scd" in first and "SeK" in first and "mIoU" in first
    assert "trained in" in first

    second = run_demo(tmp_path)
    assert "cached:" in second and "trained in" not in second
    assert (results / "map.png").exists()


def test_cache_key_follows_the_recipe_and_the_code(tmp_path):
    base = demo.cache_key(demo.TRAIN_ARGS, demo.TRAINING_CODE)
    assert base == demo.cache_key(demo.TRAIN_ARGS, demo.TRAINING_CODE)
    assert base != demo.cache_key(demo.with_values(demo.TRAIN_ARGS, {"--epochs": "4"}), demo.TRAINING_CODE)
    assert base != demo.cache_key(demo.TRAIN_ARGS, ("core/models", "training_cli"))


def test_cache_key_covers_every_module_the_training_cli_imports():
    # a module left out of the key could change the model or its card's scores without a retrain
    probe = ("import sys, training_cli.cli, training_cli.commands.train, training_cli.commands.export; "
             "print('\\n'.join(m.__file__ for n, m in sys.modules.items() "
             "if n.split('.')[0] in ('core', 'training_cli') and getattr(m, '__file__', None)))")
    files = subprocess.run([sys.executable, "-c", probe], cwd=demo.ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    assert files
    keyed = [demo.ROOT / source for source in demo.TRAINING_CODE]
    missing = [f for f in files if not any(Path(f).resolve().is_relative_to(k) for k in keyed)]
    assert not missing, f"add these to scripts/demo.py TRAINING_CODE: {missing}"
