"""The plugin zip, installed and run from the shell with ``qgis_process``, with and without torch.

Debian 12's ``/usr/bin/qgis_process`` wrapper passes an option QGIS 3.22 rejects, so
the binary is called directly. ``qgis_process`` runs the system Python: the venv's
packages (torch) are added through ``PYTHONPATH`` for the runs that need them; the runs
that show what a user without torch sees get a ``torch`` package on ``PYTHONPATH``
whose import fails, so they do not depend on what the system Python has.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from osgeo import gdal

from core import synthetic
from core.models.card import SECOND_CLASSES

pytestmark = pytest.mark.qgis

REPO = Path(__file__).resolve().parents[2]
QGIS_PROCESS = Path("/usr/bin/qgis_process.bin")
PLUGIN = "semantic_change"
VENV = sysconfig.get_paths()["purelib"]  # this venv's packages, torch among them

requires_qgis_process = pytest.mark.skipif(not QGIS_PROCESS.exists(), reason=f"{QGIS_PROCESS} is not installed")


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, str(REPO / "scripts" / "package.py"), "--out", str(out)], check=True,
                   capture_output=True, text=True)
    (archive,) = out.glob("*.zip")
    return archive


@pytest.fixture(scope="module")
def installed(plugin_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zip unpacked into a plugin folder, as QGIS's plugin installer does."""
    folder = tmp_path_factory.mktemp("installed-plugins")
    with zipfile.ZipFile(plugin_zip) as archive:
        archive.extractall(folder)
    return folder


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("qgis-profile")


@pytest.fixture(scope="module")
def no_torch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose ``torch`` fails to import, as if it were not installed."""
    folder = tmp_path_factory.mktemp("no-torch")
    (folder / "torch").mkdir()
    (folder / "torch" / "__init__.py").write_text('raise ModuleNotFoundError("No module named \'torch\'")\n')
    return folder


def _unimportable(folder: Path, *names: str) -> Path:
    """``folder`` holding packages ``names`` that fail to import, to put first on ``PYTHONPATH``."""
    for name in names:
        (folder / name).mkdir()
        (folder / name / "__init__.py").write_text(f'raise ModuleNotFoundError("No module named \'{name}\'")\n')
    return folder


@pytest.fixture(scope="module")
def bare_qgis(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A QGIS with nothing added: the Windows and macOS installers ship GDAL's own bindings and numpy, but
    neither torch nor rasterio (nor affine, which comes with rasterio)."""
    return _unimportable(tmp_path_factory.mktemp("bare-qgis"), "torch", "rasterio", "affine")


@pytest.fixture(scope="module")
def torch_only(tmp_path_factory: pytest.TempPathFactory) -> str:
    """This venv's packages (torch) with rasterio and affine unimportable: what the installer gives a QGIS."""
    return f"{_unimportable(tmp_path_factory.mktemp('no-rasterio'), 'rasterio', 'affine')}{os.pathsep}{VENV}"


def qgis_process(*args: str, plugins: Path, profile: Path, python_path: Path | str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "QGIS_OPTIONS_PATH")}
    env.update(QT_QPA_PLATFORM="offscreen", QGIS_PLUGINPATH=str(plugins), QGIS_CUSTOM_CONFIG_PATH=str(profile),
               OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(python_path))
    return subprocess.run([str(QGIS_PROCESS), *args], env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def test_zip_holds_the_plugin_and_nothing_else(plugin_zip: Path):
    with zipfile.ZipFile(plugin_zip) as archive:
        names = archive.namelist()
    assert plugin_zip.stat().st_size < 25 * 1024 * 1024
    assert all(name.startswith(f"{PLUGIN}/") for name in names)
    top = {name.split("/")[1] for name in names}
    assert {"metadata.txt", "__init__.py", "plugin", "core", "resources"} <= top
    assert not top & {"tests", "training_cli", "scripts", ".venv", "build", "dist", ".git", "Makefile"}
    assert f"{PLUGIN}/resources/icon.svg" in names and f"{PLUGIN}/core/postprocess.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pt", ".pth", ".tif"))]
    assert not [n for n in names if "/docs/dev" in n or "/." in n]


@requires_qgis_process
def test_qgis_process_runs_the_installed_zip(installed, profile, semantic_model, image_pair, torch_only, tmp_path):
    enable = qgis_process("plugins", "enable", PLUGIN, plugins=installed, profile=profile, python_path=torch_only)
    assert enable.returncode == 0, enable.stderr
    target = tmp_path / "fromto.tif"

    run = qgis_process("--json", "run", "scd:semanticchange", "--", f"INPUT_T1={image_pair[0]}",
                       f"INPUT_T2={image_pair[1]}", f"MODEL={semantic_model}", f"OUTPUT_FROMTO={target}",
                       f"OUTPUT_REPORT={tmp_path / 'report.html'}", plugins=installed, profile=profile,
                       python_path=torch_only)  # rasterio unimportable: QGIS's GDAL is all the engine needs

    assert run.returncode == 0, run.stdout + run.stderr
    answer = json.loads(run.stdout[run.stdout.index("{"):])
    assert answer["results"]["OUTPUT_FROMTO"] == str(target)
    assert answer["results"]["DEVICE_USED"] == "cpu"
    assert any(line.startswith("Diagnostics: QGIS 3.22") for line in answer["log"]["info"])
    assert (tmp_path / "report.html").exists() and (tmp_path / "report.csv").exists()
    # Without a canvas the style travels with the file: a .qml QGIS loads and labels GDAL reads.
    assert (tmp_path / "fromto.qml").exists()
    dataset = gdal.Open(str(target))
    band = dataset.GetRasterBand(1)
    band.GetDefaultRAT()  # GDAL 3.6 reads the .aux.xml lazily
    assert band.GetCategoryNames()[1 + 2] == "Water -> Low vegetation"


@requires_qgis_process
def test_qgis_process_without_torch_lists_the_algorithms_and_says_what_to_install(
        installed, profile, no_torch, semantic_model, tmp_path):
    qgis_process("plugins", "enable", PLUGIN, plugins=installed, profile=profile, python_path=no_torch)
    listing = qgis_process("list", plugins=installed, profile=profile, python_path=no_torch)
    for algorithm in ("scd:semanticchange", "scd:binarychange", "scd:modelinfo"):
        assert algorithm in listing.stdout

    run = qgis_process("run", "scd:modelinfo", "--", f"MODEL={semantic_model}", plugins=installed, profile=profile,
                       python_path=no_torch)

    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "cannot import: torch" in output and 'pip install --user "torch>=' in output
    assert "Install or repair dependencies" in output
    assert "torch: not installed" in output


# --- no run may overwrite a file of the user (issue 8) --------------------------------------------


def _digest(paths: list[Path]) -> dict[Path, bytes]:
    import hashlib

    return {path: hashlib.sha256(path.read_bytes()).digest() for path in paths}


@pytest.fixture
def user_files(image_pair, semantic_model, tmp_path) -> dict[str, Path]:
    """The user's own files, copied so that a failure here cannot spoil other tests: T1, T2, T1 inside a
    GeoPackage, and the model file under a raster-like name."""
    import shutil

    import rasterio

    folder = tmp_path / "user"
    folder.mkdir()
    files = {name: Path(shutil.copy(source, folder / source.name)) for name, source in
             (("t1", image_pair[0]), ("t2", image_pair[1]))}
    files["model"] = Path(shutil.copy(semantic_model, folder / "model.tif"))
    files["gpkg"] = folder / "scene.gpkg"
    with rasterio.open(files["t1"]) as src, rasterio.open(
            files["gpkg"], "w", driver="GPKG", width=src.width, height=src.height, count=src.count,
            dtype=src.dtypes[0], crs=src.crs, transform=src.transform, RASTER_TABLE="t1") as dst:
        dst.write(src.read())
    (folder / "t1-link.tif").symlink_to(files["t1"])
    return files


@pytest.fixture(scope="module")
def enabled(installed: Path, profile: Path) -> Path:
    """The installed plugin, enabled once in this module's profile (each ``qgis_process`` start costs seconds)."""
    qgis_process("plugins", "enable", PLUGIN, plugins=installed, profile=profile, python_path=VENV)
    return installed


@requires_qgis_process
@pytest.mark.parametrize(("t1", "outputs", "said"), [
    ("t1", {"OUTPUT_FROMTO": "t1"}, "the input INPUT_T1"),
    ("t1", {"OUTPUT_FROMTO": "t1-link.tif"}, "the input INPUT_T1"),
    ("t1", {"OUTPUT_FROMTO": "out.tif", "OUTPUT_REPORT": "t1"}, "the input INPUT_T1"),
    ("t1", {"OUTPUT_FROMTO": "out.tif", "OUTPUT_REPORT": "out.tif"}, "the same file"),
    ("t1", {"OUTPUT_FROMTO": "out.tif", "OUTPUT_CHANGE_PROB": "model"}, "the model file"),
    ("gpkg", {"OUTPUT_FROMTO": "out.tif", "OUTPUT_POLYGONS": "gpkg"}, "scene.gpkg"),
])
def test_qgis_process_refuses_outputs_that_would_overwrite_the_users_files(enabled, profile, user_files, t1,
                                                                          outputs, said):
    folder = user_files["t1"].parent
    before = _digest([p for p in user_files.values()])
    source = f"GPKG:{user_files['gpkg']}:t1" if t1 == "gpkg" else str(user_files["t1"])
    arguments = [f"{name}={user_files[value] if value in user_files else folder / value}"
                 for name, value in outputs.items()]

    run = qgis_process("run", "scd:semanticchange", "--", f"INPUT_T1={source}", f"INPUT_T2={user_files['t2']}",
                       f"MODEL={user_files['model']}", *arguments, plugins=enabled, profile=profile,
                       python_path=VENV)

    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert said.replace("INPUT_", "") in output and "Traceback" not in output, output
    assert _digest(list(user_files.values())) == before
    assert not (folder / "out.tif").exists()


@requires_qgis_process
def test_sigterm_to_qgis_process_leaves_no_temporary_files(enabled, profile, semantic_model, tmp_path):
    import signal
    import time

    palette = [c.color for c in SECOND_CLASSES]
    t1, t2, _ = synthetic.write_pair(tmp_path / "in", palette, height=768, width=768, seed=2)
    out = tmp_path / "out"
    out.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "QGIS_OPTIONS_PATH")}
    env.update(QT_QPA_PLATFORM="offscreen", QGIS_PLUGINPATH=str(enabled), QGIS_CUSTOM_CONFIG_PATH=str(profile),
               OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=VENV)
    with (tmp_path / "log.txt").open("w") as log:
        child = subprocess.Popen([str(QGIS_PROCESS), "run", "scd:semanticchange", "--", f"INPUT_T1={t1}",
                                  f"INPUT_T2={t2}", f"MODEL={semantic_model}", f"OUTPUT_FROMTO={out / 'f.tif'}",
                                  f"OUTPUT_CHANGE_PROB={out / 'p.tif'}"], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 240
        while not [p for p in out.iterdir() if ".partial" in p.name]:
            assert child.poll() is None, (tmp_path / "log.txt").read_text()
            assert time.monotonic() < deadline, "the run never started writing"
            time.sleep(0.1)
        time.sleep(0.5)
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode != 0
    assert list(out.iterdir()) == [], (tmp_path / "log.txt").read_text()
@requires_qgis_process
def test_qgis_process_compares_two_land_cover_maps_with_nothing_added_to_qgis(installed, profile, bare_qgis,
                                                                              tmp_path):
    from helpers import move_to_band_2, write_worldcover_pair

    t1, t2 = write_worldcover_pair(tmp_path / "in")
    move_to_band_2(t1)  # T1 is a stack: its land-cover map is band 2
    qgis_process("plugins", "enable", PLUGIN, plugins=installed, profile=profile, python_path=bare_qgis)
    target = tmp_path / "fromto.tif"
    run = qgis_process("--json", "run", "scd:compareclassifications", "--", f"INPUT_T1={t1}", "BAND_T1=2",
                       f"INPUT_T2={t2}", f"OUTPUT_FROMTO={target}", f"OUTPUT_REPORT={tmp_path / 'report.html'}",
                       "MIN_AREA=4", plugins=installed, profile=profile, python_path=bare_qgis)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "rasterio" not in run.stdout + run.stderr
    answer = json.loads(run.stdout[run.stdout.index("{"):])
    assert not [line for line in answer["log"]["info"] if "no band was chosen" in line]
    assert answer["results"]["OUTPUT_FROMTO"] == str(target) and answer["results"]["CHANGED_PIXELS"] > 0
    assert (tmp_path / "report.csv").exists() and (tmp_path / "fromto.qml").exists()
    dataset = gdal.Open(str(target))
    band = dataset.GetRasterBand(1)
    band.GetDefaultRAT()  # GDAL 3.6 reads the .aux.xml lazily
    assert "Tree cover -> Built-up" in band.GetCategoryNames()
