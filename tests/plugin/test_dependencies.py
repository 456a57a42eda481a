"""The pip command a user is told to run: one per system and torch build, with the pinned versions."""

from __future__ import annotations

import pytest

from plugin import dependencies, installer
from plugin.dependencies import pip_install_command

TORCH = ["torch", "torchvision"]
INDEX = installer.PYTORCH_INDEX


def test_each_system_gets_the_index_of_the_build_asked_for():
    pins = dependencies.runtime_requirements()
    packages = f'"torch{pins["torch"]}" "torchvision{pins["torchvision"]}"'
    # PyPI's torch is the CPU build on Windows and macOS, the CUDA build on Linux
    assert pip_install_command("Windows", "cpu", "python", TORCH) == f"python -m pip install {packages}"
    assert pip_install_command("Windows", "cu126", r"C:\OSGeo4W\apps\Python312\python.exe", TORCH) == \
        f"python -m pip install {packages} --index-url {INDEX}/cu126"
    assert pip_install_command("Darwin", "cpu", "/Applications/QGIS.app/Contents/MacOS/bin/python3", TORCH) == \
        f'"/Applications/QGIS.app/Contents/MacOS/bin/python3" -m pip install --user {packages}'
    venv = "/home/me/venv/bin/python3"
    assert pip_install_command("Linux", "cpu", venv, TORCH) == \
        f'"{venv}" -m pip install --user {packages} --index-url {INDEX}/cpu'
    assert pip_install_command("Linux", installer.PYPI_LINUX_CUDA, venv, TORCH) == \
        f'"{venv}" -m pip install --user {packages}'
    assert pip_install_command("Linux", "cu128", venv, TORCH).endswith(f" --index-url {INDEX}/cu128")


def test_debian_python_is_told_to_break_system_packages_and_other_packages_need_no_index():
    command = pip_install_command("Linux", "cpu", "/usr/bin/python3", TORCH)
    assert " --break-system-packages --index-url " in command
    runtime = pip_install_command("Linux", "cpu", "/usr/bin/python3", ["onnxruntime"])
    assert runtime == '"/usr/bin/python3" -m pip install --user onnxruntime --break-system-packages'
    assert "--index-url" not in pip_install_command("Windows", "cu128", "python", ["onnxruntime"])


def test_the_plugin_needs_no_rasterio_and_the_installer_adds_none():
    """Rasters go through QGIS's own GDAL: a rasterio wheel would bring a second GDAL into QGIS's process."""
    assert "rasterio" not in dependencies.runtime_requirements()
    assert "rasterio" not in [module for module, _ in dependencies.REQUIRED]
    assert "rasterio" not in installer.PROBED


def test_impossible_builds_are_refused():
    with pytest.raises(ValueError, match="no CUDA build of torch for macOS"):
        pip_install_command("Darwin", "cu128", "/usr/local/bin/python3", TORCH)
    with pytest.raises(ValueError, match="unknown torch build 'cu999'"):
        pip_install_command("Linux", "cu999", "/usr/bin/python3", TORCH)
