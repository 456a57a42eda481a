"""The dependency installer, headless, against the real pip and the package sources this machine's pip reaches.

The Python that stands in for QGIS's is the system ``/usr/bin/python3`` (the one
``qgis_process`` runs), which has no torch: the venv's torch must never be seen, so every
subprocess here runs without the venv on ``PYTHONPATH``. The one full install (torch,
torchvision and NVIDIA's libraries: the only torch and torchvision pair this machine's
sources hold that imports, since they have no CPU build of torchvision) is shared by the
tests of this module and removed at the end; it takes about two minutes on two cores.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from osgeo import gdal

pytestmark = pytest.mark.qgis

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")
QGIS_PROCESS = Path("/usr/bin/qgis_process.bin")
PLUGIN = "semantic_change"


def _system_env() -> dict[str, str]:
    """The environment without the venv: what QGIS's own Python sees."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "QGIS_OPTIONS_PATH")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    env.update(PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1")
    return env


def _system_python_has(module: str) -> bool:
    return subprocess.run([str(SYSTEM_PYTHON), "-c", f"import {module}"], env=_system_env(), capture_output=True,
                          check=False).returncode == 0


needs_system_python = pytest.mark.skipif(
    not SYSTEM_PYTHON.exists() or not _system_python_has("pip") or _system_python_has("torch"),
    reason="needs a system Python with pip and without torch (it plays QGIS's Python)")

installer = importlib.import_module("plugin.installer")


@pytest.fixture(scope="module")
def plugin_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin zip unpacked as QGIS's plugin installer does: the installer runs from what ships."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([str(SYSTEM_PYTHON), str(REPO / "scripts" / "package.py"), "--out", str(out)], check=True,
                   capture_output=True, env=_system_env())
    folder = tmp_path_factory.mktemp("plugins")
    with zipfile.ZipFile(next(out.glob("*.zip"))) as archive:
        archive.extractall(folder)
    return folder


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A QGIS settings folder (``QGIS_CUSTOM_CONFIG_PATH``); its default profile holds the private folder."""
    return tmp_path_factory.mktemp("qgis-config")


@pytest.fixture(scope="module")
def installed(plugin_folder: Path, profile: Path):
    """One real install through the command-line entry point of the unpacked plugin, as a script would run it."""
    root = installer.default_root(profile / "profiles" / "default")
    run = subprocess.run(
        [str(SYSTEM_PYTHON), "-m", f"{PLUGIN}.plugin.installer", "install", "--root", str(root), "--variant", "cuda",
         "--cuda-build", installer.PYPI_LINUX_CUDA, "--no-pytorch-index"],
        cwd=plugin_folder, env=_system_env(), capture_output=True, text=True, timeout=900, check=False)
    yield root, run
    # 4.5 GB in 20,000 files: never left in the temporary folder, but deleting takes a minute on two cores, so a
    # detached ``rm`` does it while the other tests run.
    trash = root.with_name(f"{root.name}-deleting")
    root.rename(trash)
    subprocess.run(["sh", "-c", 'rm -rf "$1" >/dev/null 2>&1 &', "sh", str(trash)], check=True)


def _qgis_process(*args: str, plugins: Path, profile: Path) -> subprocess.CompletedProcess[str]:
    env = _system_env()
    env.update(QT_QPA_PLATFORM="offscreen", QGIS_PLUGINPATH=str(plugins), QGIS_CUSTOM_CONFIG_PATH=str(profile))
    return subprocess.run([str(QGIS_PROCESS), *args], env=env, capture_output=True, text=True, timeout=300,
                          check=False)


@needs_system_python
@pytest.mark.skipif(not QGIS_PROCESS.exists(), reason=f"{QGIS_PROCESS} is not installed")
def test_install_then_a_fresh_qgis_process_imports_torch_from_the_private_folder_and_runs(
        installed, plugin_folder, profile, semantic_model, image_pair, tmp_path):
    root, run = installed
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "keeping QGIS's numpy" in run.stdout and "import check: torch 2." in run.stdout
    folder = installer.active_folder(root)
    assert folder is not None and folder.parent == root
    assert (folder / "torch" / "__init__.py").is_file() and (folder / installer.MANIFEST).is_file()
    # Nothing QGIS already has was put in front of it, numpy above all, and nothing went outside the folder.
    assert not (folder / "numpy").exists() and not list(folder.glob("numpy-*.dist-info"))
    assert not list(folder.glob("GDAL-*")) and not list(folder.glob("rasterio*"))
    assert not (folder / "triton").exists() and "leaving out triton" in run.stdout  # it crashes QGIS desktop
    assert not _system_python_has("torch")
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []  # no staging or scratch left
    assert not installer.check_folder(root).broken
    assert f"installing into {root}" in installer.last_log(root)

    enable = _qgis_process("plugins", "enable", PLUGIN, plugins=plugin_folder, profile=profile)
    assert enable.returncode == 0, enable.stdout + enable.stderr
    target = tmp_path / "fromto.tif"
    result = _qgis_process("--json", "run", "scd:semanticchange", "--", f"INPUT_T1={image_pair[0]}",
                           f"INPUT_T2={image_pair[1]}", f"MODEL={semantic_model}", f"OUTPUT_FROMTO={target}",
                           plugins=plugin_folder, profile=profile)

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    answer = json.loads(result.stdout[result.stdout.index("{"):])
    diagnostics = next(line for line in answer["log"]["info"] if line.startswith("Diagnostics:"))
    assert "torch 2." in diagnostics and "(from the plugin's private folder)" in diagnostics
    assert answer["results"]["OUTPUT_FROMTO"] == str(target)
    assert gdal.Open(str(target)).RasterXSize == 96


@needs_system_python
def test_cancel_mid_install_leaves_the_previous_install_active_and_importable(installed, tmp_path):
    root, run = installed
    assert run.returncode == 0, run.stderr[-2000:]
    before = installer.active_folder(root)
    unpacking = threading.Event()

    def on_line(line: str) -> None:
        if line.startswith("Installing collected packages"):  # pip is unpacking torch: about 15 s
            unpacking.set()

    job = installer.Installer(root, python=str(SYSTEM_PYTHON), options=installer.Options(
        variant="cpu", use_pytorch_index=False), on_line=on_line)
    canceller = threading.Thread(target=lambda: unpacking.wait(120) and job.cancel())
    canceller.start()
    with pytest.raises(installer.CancelledError):
        job.run()
    canceller.join()

    assert installer.active_folder(root) == before
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []
    assert "cancelled" in installer.last_log(root)
    # The plugin's start-up step puts the previous folder on sys.path, and torch imports from it.
    check = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import sys; from plugin.installer import activate; "
         f"print(activate({str(root)!r})); import torch; print(torch.__file__)"],
        cwd=REPO, env=_system_env(), capture_output=True, text=True, timeout=120, check=False)
    assert check.returncode == 0, check.stderr
    assert check.stdout.splitlines() == [str(before), str(before / "torch" / "__init__.py")]


@pytest.fixture
def small_install(tmp_path: Path) -> Path:
    """A real install of one small package (mpmath) through the same installer, from its own requirements file."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("mpmath==1.3.0\n", encoding="utf-8")
    root = tmp_path / installer.FOLDER_NAME
    installer.Installer(root, python=str(SYSTEM_PYTHON), options=installer.Options(
        requirements=requirements, use_pytorch_index=False)).run()
    return root


@needs_system_python
def test_a_truncated_or_missing_file_is_found_and_repair_restores_the_folder(small_install: Path, tmp_path):
    root = small_install
    folder = installer.active_folder(root)
    assert folder is not None and not installer.check_folder(root).broken
    (folder / "mpmath" / "ctx_base.py").write_bytes((folder / "mpmath" / "ctx_base.py").read_bytes()[:100])
    (folder / "mpmath" / "usertools.py").unlink()

    check = installer.check_folder(root)
    assert check.broken and set(check.damaged["mpmath"]) == {"mpmath/ctx_base.py", "mpmath/usertools.py"}
    assert "Repair reinstalls" in check.describe()
    cli = subprocess.run([str(SYSTEM_PYTHON), "-m", "plugin.installer", "check", "--root", str(root)], cwd=REPO,
                         env=_system_env(), capture_output=True, text=True, check=False)
    assert cli.returncode == 1 and "mpmath (2 file(s) missing or truncated" in cli.stdout

    requirements = tmp_path / "requirements.txt"
    installer.Installer(root, python=str(SYSTEM_PYTHON), options=installer.Options(
        requirements=requirements, use_pytorch_index=False)).run()
    assert not installer.check_folder(root).broken
    assert [p.name for p in root.iterdir() if p.name.startswith("site-")] == [installer.active_folder(root).name]


@needs_system_python
def test_a_failed_install_changes_nothing(small_install: Path, tmp_path):
    before = installer.active_folder(small_install)
    requirements = tmp_path / "impossible.txt"
    requirements.write_text("mpmath==0.0.1\n", encoding="utf-8")
    job = installer.Installer(small_install, python=str(SYSTEM_PYTHON), options=installer.Options(
        requirements=requirements, use_pytorch_index=False, no_index=True, find_links=[str(tmp_path)]))
    with pytest.raises(installer.InstallError, match="pip failed"):
        job.run()
    assert installer.active_folder(small_install) == before and not installer.check_folder(small_install).broken
    assert "FAILED" in installer.last_log(small_install)


# --- decisions that need no install ------------------------------------------------------------


def test_the_cuda_build_that_fits_the_driver():
    assert installer.fitting_cuda_build("13.1") == "cu130"
    assert installer.fitting_cuda_build("12.9") == "cu128"
    assert installer.fitting_cuda_build("12.6") == "cu126"
    assert installer.fitting_cuda_build("12.4") is None  # too old a driver for every build: update it
    assert installer.fitting_cuda_build(None) is None
    gpu = installer.GpuInfo(gpus=("NVIDIA RTX A2000",), driver="570.86", cuda="12.8")
    assert gpu.fitting_build == "cu128" and "CUDA build cu128 fits" in gpu.describe()


def test_gpu_detection_reads_nvidia_smi(tmp_path):
    """The two nvidia-smi outputs used, in the format the driver prints (no GPU on the test machines)."""
    script = tmp_path / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--query-gpu=name,driver_version" ]; then echo "NVIDIA GeForce RTX 3060, 570.86.15"; exit 0; fi\n'
        "echo '| NVIDIA-SMI 570.86.15              Driver Version: 570.86.15      CUDA Version: 12.8     |'\n")
    script.chmod(0o755)
    gpu = installer.detect_gpu(str(script))
    assert (gpu.gpus, gpu.driver, gpu.cuda, gpu.fitting_build) == (("NVIDIA GeForce RTX 3060",), "570.86.15", "12.8",
                                                                   "cu128")
    assert installer.choose_variant(gpu) == "cuda"


def test_gpu_detection_without_a_driver_says_so(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    gpu = installer.detect_gpu()
    assert gpu.gpus == () and "no NVIDIA driver" in gpu.describe()
    assert installer.choose_variant(gpu) == "cpu"


def test_the_python_is_found_when_sys_executable_is_qgis_itself(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """Inside QGIS ``sys.executable`` is qgis(-bin.exe); the interpreter is found and checked by running it."""
    fake_qgis = tmp_path / "qgis"
    fake_qgis.write_text("")
    monkeypatch.setattr(sys, "executable", str(fake_qgis))
    found = installer.find_python()
    assert Path(found.executable).name.startswith("python") and found.version == platform.python_version()
    assert found.pip  # this Python has pip


def test_the_plan_must_match_the_chosen_build(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    cuda_plan = [installer.Planned("torch", "2.14.1", "file:///t.whl", None),
                 installer.Planned("triton", "3.8.0", "file:///tr.whl", None)]
    cpu_plan = [installer.Planned("torch", "2.14.1+cpu", "file:///t.whl", None)]
    cpu = installer.Installer(tmp_path, options=installer.Options(variant="cpu"))
    cuda = installer.Installer(tmp_path, options=installer.Options(variant="cuda"))
    with pytest.raises(installer.InstallError, match="only a CUDA build"):
        cpu._check_plan(cuda_plan)
    with pytest.raises(installer.InstallError, match="only a CPU build"):
        cuda._check_plan(cpu_plan)
    cpu._check_plan(cpu_plan)
    cuda._check_plan(cuda_plan)
    with pytest.raises(installer.InstallError, match="replace QGIS's own"):
        cpu._check_plan([*cpu_plan, installer.Planned("numpy", "2.3.0", "file:///n.whl", None)])


def test_pytorch_index_per_platform_and_build(monkeypatch: pytest.MonkeyPatch):
    expected = {("Linux", "cpu", None): f"{installer.PYTORCH_INDEX}/cpu",
                ("Linux", "cuda", installer.PYPI_LINUX_CUDA): None,  # PyPI's Linux wheel is this build
                ("Linux", "cuda", "cu126"): f"{installer.PYTORCH_INDEX}/cu126",
                ("Windows", "cpu", None): None,  # PyPI's Windows wheel is the CPU build
                ("Windows", "cuda", "cu128"): f"{installer.PYTORCH_INDEX}/cu128",
                ("Darwin", "cpu", None): None}
    for (system, variant, build), index in expected.items():
        monkeypatch.setattr(platform, "system", lambda system=system: system)
        assert installer.Options(variant=variant, cuda_build=build).torch_index() == index, (system, variant)
    offline = installer.Options(variant="cpu", no_index=True, find_links=["/wheels"], proxy="http://p:8080")
    assert offline.pip_source_args() == ["--no-index", "--find-links", "/wheels", "--proxy", "http://p:8080"]


def test_activate_puts_only_the_active_folder_on_sys_path(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "site-old").mkdir()
    (tmp_path / ".staging-x").mkdir()  # a cancelled install, a day old
    os.utime(tmp_path / ".staging-x", (time.time() - 86400, time.time() - 86400))
    sys.path.insert(0, str(tmp_path / "site-old"))
    assert installer.activate(tmp_path) is None  # nothing active: nothing added, the stale entry and folders gone
    assert not [p for p in sys.path if str(tmp_path) in p]
    assert list(tmp_path.iterdir()) == []
    (tmp_path / ".staging-running").mkdir()  # another QGIS window installing now: left alone
    (tmp_path / "site-new").mkdir()
    (tmp_path / installer.POINTER).write_text("site-new\n")
    assert installer.activate(tmp_path) == tmp_path / "site-new"
    assert installer.activate(tmp_path) == tmp_path / "site-new"
    assert [p for p in sys.path if str(tmp_path) in p] == [str(tmp_path / "site-new")]
    assert sys.path[0] == str(tmp_path / "site-new")
    assert (tmp_path / ".staging-running").is_dir()


def test_leftovers_of_a_killed_install_are_found_by_their_temporary_names(tmp_path):
    """Staging folder, pip's work files and pointer under core.files' temporary names: old ones go, young ones stay."""
    from core.files import partial_path

    (tmp_path / "site-new").mkdir()
    (tmp_path / installer.POINTER).write_text("site-new\n")
    old = [partial_path(tmp_path / "site-20250101-120000-abcdef"), partial_path(tmp_path / "constraints.txt"),
           partial_path(tmp_path / installer.POINTER)]
    old[0].mkdir()
    for path in old[1:]:
        path.write_text("x")
    for path in old:
        os.utime(path, (time.time() - 86400, time.time() - 86400))
    running = partial_path(tmp_path / "site-20250102-120000-abcdef")  # another QGIS window installing now
    running.mkdir()
    assert installer.activate(tmp_path) == tmp_path / "site-new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([running.name, installer.POINTER, "site-new"])
    assert installer.check_folder(tmp_path).active == tmp_path / "site-new"


def test_the_installer_runs_without_qgis_numpy_or_torch_and_has_no_import_circle():
    """It installs torch where there is none, from QGIS's Python or a terminal: it imports nothing heavy. No
    module of the package imports the package back or a module that imports it."""
    loaded = subprocess.run([sys.executable, "-c", "import sys, plugin.installer; print(' '.join(sys.modules))"],
                            cwd=REPO, env=_system_env(), capture_output=True, text=True, check=True).stdout.split()
    assert not {"numpy", "torch", "rasterio", "osgeo", "qgis", "PyQt5"} & {name.split(".")[0] for name in loaded}
    folder = REPO / "plugin" / "installer"
    graph = {}
    for module in folder.glob("*.py"):
        tree = ast.parse(module.read_text(encoding="utf-8"))
        graph[module.stem] = {node.module or "__init__" for node in ast.walk(tree)
                              if isinstance(node, ast.ImportFrom) and node.level == 1}
    for name, imported in graph.items():
        if name not in ("__init__", "__main__"):
            assert "__init__" not in imported, f"{name} imports the package that imports it"
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import circle: {' -> '.join((*path, name))}"
        if name not in done:
            for child in graph.get(name, ()):
                visit(child, (*path, name))
            done.add(name)

    for name in graph:
        visit(name, ())


def test_an_install_without_the_disk_space_it_needs_is_refused_before_anything_is_written(
        tmp_path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "site-old").mkdir()
    (tmp_path / installer.POINTER).write_text("site-old\n")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=int(1.5e9)))
    job = installer.Installer(tmp_path, python=sys.executable, options=installer.Options(variant="cpu"))
    with pytest.raises(installer.InstallError, match=r"CPU build needs about 2 GB free .* only 1\.5 GB are free"):
        job.run()
    assert installer.active_folder(tmp_path) == tmp_path / "site-old"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([installer.POINTER, "site-old", "last-install.log"])
    assert "FAILED" in installer.last_log(tmp_path)


def test_checks_of_qgis_python_never_see_the_private_folder(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """A probe asks what QGIS's own Python has: an earlier install on PYTHONPATH would answer for it."""
    from plugin.installer.processes import clean_env

    private = tmp_path / installer.FOLDER_NAME / "site-1"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(private), "/opt/qgis/python"]))
    assert clean_env()["PYTHONPATH"] == "/opt/qgis/python"


def test_one_requirements_file_pins_the_runtime_packages_for_setup_and_installer():
    setup = [line for line in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines()
             if line and not line.startswith("#")]
    assert "-r plugin/runtime-requirements.txt" in setup and not [line for line in setup if "torch" in line]
    assert installer.requirement_modules() == ["torch", "torchvision"]
    assert "plugin/runtime-requirements.txt" in (REPO / "scripts" / "setup.sh").read_text(encoding="utf-8")


@needs_system_python
def test_what_qgis_python_already_has_is_not_installed_again(tmp_path):
    """rasterio comes with this system's Python (as QGIS's does): nothing goes into the private folder."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("rasterio>=1.3\n", encoding="utf-8")
    root = tmp_path / installer.FOLDER_NAME
    result = installer.Installer(root, python=str(SYSTEM_PYTHON), options=installer.Options(
        requirements=requirements, use_pytorch_index=False)).run()
    assert result.installed == [] and list(result.folder.iterdir()) == [result.folder / installer.MANIFEST]
    assert not installer.check_folder(root).broken
    assert result.versions["rasterio"]["file"].startswith("/usr/")
