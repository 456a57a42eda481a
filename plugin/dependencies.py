"""What the engine needs in QGIS's own Python, how to tell a user what is missing, and a diagnostics line.

Installation and "GPU found but not used" are what users of deep-learning plugins
struggle with most, so a missing package is reported with the exact command for
the Python that QGIS runs, and every run's log starts with one line that says which
versions and which device were found. Nothing here imports torch at module level.
"""

from __future__ import annotations

import importlib
import platform
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import installer

#: (module to import, package name for pip), in the order the message lists them.
REQUIRED = (("torch", "torch"), ("torchvision", "torchvision"))

PYTORCH_URL = "https://pytorch.org/get-started/locally/"
REQUIREMENTS_FILE = installer.REQUIREMENTS_FILE
INSTALLER_MENU = "Plugins > Semantic change detection > Install or repair dependencies"

#: Oldest Python the engine runs on.
MINIMUM_PYTHON = (3, 10)


@dataclass(frozen=True)
class MissingPackage:
    module: str
    pip_name: str
    reason: str


def python_problem() -> str | None:
    """Why this QGIS's Python cannot run the engine, or None."""
    if sys.version_info >= MINIMUM_PYTHON:
        return None
    needed = ".".join(map(str, MINIMUM_PYTHON))
    return (f"this QGIS runs Python {platform.python_version()}, but the change detection engine needs Python "
            f"{needed} or newer. Install a QGIS release that comes with Python {needed} or newer (Help > About "
            "shows the Python version).")


def runtime_requirements() -> dict[str, str]:
    """``runtime-requirements.txt`` as ``{package: specifier}``: the pins the installer and ``make setup`` share."""
    requirements = {}
    for line in REQUIREMENTS_FILE.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", line)
        if match:
            requirements[match[1]] = match[2].replace(" ", "")
    return requirements


def missing_packages() -> list[MissingPackage]:
    """Required packages that cannot be imported (absent, or broken like a failing DLL) or are too old."""
    missing = []
    minimums = _minimum_versions()
    for module, pip_name in REQUIRED:
        try:
            imported = importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 - any import failure makes the package unusable
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            missing.append(MissingPackage(module, pip_name, reason))
            continue
        version = str(getattr(imported, "__version__", ""))
        minimum = minimums.get(pip_name)
        if minimum and _release(version) < _release(minimum):
            missing.append(MissingPackage(module, pip_name, f"version {version} is too old, {minimum} or newer needed"))
    return missing


def _minimum_versions() -> dict[str, str]:
    minimums = {}
    for name, specifier in runtime_requirements().items():
        match = re.search(r">=\s*([\d.]+)", specifier)
        if match:
            minimums[name] = match[1]
    return minimums


def _release(version: str) -> tuple[int, ...]:
    """``"2.14.1+cu130"`` -> ``(2, 14, 1)``: enough to compare against a minimum."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def python_executable() -> str:
    """The Python interpreter QGIS embeds (``sys.executable`` is QGIS itself on Windows and macOS).

    The installer finds it by running each candidate; when none answers, the most likely path is named.
    """
    try:
        return installer.find_python().executable
    except installer.InstallError:
        candidates = [str(p) for p in installer.python_candidates() if p.is_file()]
        return candidates[0] if candidates else "python3"


def _quoted(packages: list[str]) -> str:
    """Package names with their pinned versions, quoted for the shell (cmd.exe and POSIX shells alike)."""
    requirements = runtime_requirements()
    return " ".join(f'"{name}{requirements[name]}"' if requirements.get(name) else name for name in packages)


def pip_install_command(system: str, build: str, python: str, packages: Sequence[str]) -> str:
    """The one shell command that installs ``packages`` into QGIS's Python: what messages and the README show.

    PyPI's torch is a different build on each platform: on Windows and macOS it is the CPU
    build (on macOS it also uses the Apple GPU); on Linux it is the CUDA build of
    :data:`~.installer.PYPI_LINUX_CUDA`, and the CPU build comes from PyTorch's CPU index. A
    CUDA build for Windows, or one for an older Linux driver, comes from PyTorch's index for
    that CUDA version. The versions are the pins of ``runtime-requirements.txt``.

    Args:
        system: ``platform.system()``: ``"Windows"``, ``"Darwin"`` or ``"Linux"``.
        build: ``"cpu"`` or one of :data:`~.installer.CUDA_BUILDS`; only torch has builds, so
            without torch in ``packages`` it changes nothing.
        python: QGIS's interpreter. On Windows the OSGeo4W Shell's ``python`` is QGIS's own and is
            called by that name.
        packages: pip names of the packages.

    Raises:
        ValueError: A CUDA build on macOS, or a build PyTorch does not publish.
    """
    if build != "cpu" and build not in installer.CUDA_BUILDS:
        raise ValueError(f"unknown torch build {build!r}: 'cpu' or one of {', '.join(installer.CUDA_BUILDS)}")
    names = _quoted(list(packages))
    torch = "torch" in packages
    index = f" --index-url {installer.PYTORCH_INDEX}/{build}"
    if system == "Windows":
        return f"python -m pip install {names}" + (index if torch and build != "cpu" else "")
    if system == "Darwin" and torch and build != "cpu":
        raise ValueError("there is no CUDA build of torch for macOS")
    command = f'"{python}" -m pip install --user {names}'
    if Path(python).is_relative_to("/usr"):
        # Debian/Ubuntu mark the system Python as externally managed (PEP 668).
        command += " --break-system-packages"
    if system == "Darwin" or not torch or build == installer.PYPI_LINUX_CUDA:
        return command
    return command + index


def install_instructions(packages: list[str]) -> str:
    """The exact commands that install ``packages`` into QGIS's Python on this system, for a CPU and a CUDA build.

    The commands come from :func:`pip_install_command`; the CUDA build is the newest one the
    driver found runs (an older one when no NVIDIA driver answers).
    """
    system = platform.system()
    build = installer.detect_gpu().fitting_build or installer.CUDA_BUILDS[1]
    python = "python" if system == "Windows" else python_executable()

    def command(build: str) -> str:
        return pip_install_command(system, build, python, packages)

    if system == "Windows":
        text = ("close QGIS, open the 'OSGeo4W Shell' from the Start menu (as administrator if QGIS is installed for "
                f"all users) and run, for the CPU build:  {command('cpu')}")
        if "torch" in packages:
            text += f"  or, for an NVIDIA GPU (CUDA build):  {command(build)}"
        return text
    if system == "Darwin":
        return (f"close QGIS, open Terminal and run:  {command('cpu')}  (this build also uses the Apple GPU; there is "
                "no CUDA)")
    if "torch" not in packages:
        return f"close QGIS, open a terminal and run:  {command('cpu')}"
    older = build if build != installer.PYPI_LINUX_CUDA else installer.CUDA_BUILDS[1]
    return (f"close QGIS, open a terminal and run, for the CPU build:  {command('cpu')}  or, for an NVIDIA GPU "
            f"(CUDA build; PyPI's default on Linux, for recent drivers):  {command(installer.PYPI_LINUX_CUDA)}  "
            f"or, for an older driver:  {command(older)}")


def missing_message(missing: list[MissingPackage]) -> str:
    """The user-facing explanation: what is missing, why, and how to fix it (the installer, or by hand)."""
    listed = "; ".join(f"{m.pip_name} ({m.reason})" for m in missing)
    packages = [m.pip_name for m in missing]
    if "torch" in packages and "torchvision" not in packages:
        packages.append("torchvision")  # torchvision is built for one torch release: they go together
    message = (
        f"This algorithm runs deep-learning models and needs {', '.join(packages)} in the Python that QGIS uses "
        f"(Python {platform.python_version()}, {python_executable()}), but it cannot import: {listed}. "
        f"To install them for you, into a folder of the plugin's own: {INSTALLER_MENU}. "
        f"Or by hand: {install_instructions(packages)}  and then start QGIS again."
    )
    if "torch" in packages:
        message += f" The builds for every system are listed at {PYTORCH_URL}."
    return message


#: Called (from any thread) with the message when a run finds packages missing; the desktop plugin sets it to
#: offer the installer dialog. None in ``qgis_process`` and scripts.
offer_installer: Callable[[str], None] | None = None


def private_root() -> Path:
    """The plugin's private package folder in the current QGIS profile."""
    from qgis.core import QgsApplication

    return installer.default_root(QgsApplication.qgisSettingsDirPath())


def use_private_packages() -> Path | None:
    """Put the private package folder on ``sys.path``; called when the plugin loads, before anything imports torch."""
    try:
        return installer.activate(private_root())
    except Exception:  # noqa: BLE001 - a damaged folder must not stop QGIS loading the plugin; the dialog repairs it
        return None


def require_engine() -> None:
    """Stop a run, with what to do, when this QGIS's Python cannot run the engine.

    In the desktop the installer dialog is offered too.

    Raises:
        QgsProcessingException: The Python is too old, or a required package is missing.
    """
    from qgis.core import QgsProcessingException

    problem = python_problem()
    if problem:
        raise QgsProcessingException(problem)
    missing = missing_packages()
    if missing:
        message = missing_message(missing)
        if offer_installer is not None:
            offer_installer(message)
        raise QgsProcessingException(message)


def diagnostics(engine: bool = True) -> str:
    """One line for every run's log: QGIS, Python, torch, CUDA and GDAL versions, and the device found.

    ``engine=False`` is the line of an algorithm that runs no network (the comparison of two
    maps): without torch, CUDA and the device, and without importing torch, which takes seconds
    and is not needed there.
    """
    parts = [f"QGIS {_qgis_version()}", f"Python {platform.python_version()}"]
    device = None
    if engine:
        try:
            torch = importlib.import_module("torch")
        except Exception:  # noqa: BLE001 - reported as missing, the run then explains how to install it
            parts += ["torch: not installed", "CUDA: n/a"]
            device = "none (torch missing)"
        else:
            private = installer.FOLDER_NAME in str(getattr(torch, "__file__", ""))
            parts.append(f"torch {torch.__version__}" + (" (from the plugin's private folder)" if private else ""))
            parts.append(_cuda(torch))
            device = _device()
    parts.append(f"GDAL {_gdal_version()}")
    if device is not None:
        parts.append(f"device found: {device}")
    return "Diagnostics: " + "; ".join(parts)


def _qgis_version() -> str:
    from qgis.core import Qgis

    return Qgis.version()


def _gdal_version() -> str:
    try:
        from osgeo import gdal
    except ImportError:
        return "not installed"
    return gdal.__version__


def _cuda(torch: object) -> str:
    cuda = getattr(getattr(torch, "version", None), "cuda", None)
    if cuda is None:
        return "CUDA: none (CPU-only build of torch)"
    try:
        available = torch.cuda.is_available()  # type: ignore[attr-defined]
    except Exception as error:  # noqa: BLE001 - a broken driver must not stop the log line
        return f"CUDA {cuda} build, not usable ({error})"
    if not available:
        return f"CUDA {cuda} build, no usable GPU or driver"
    return f"CUDA {cuda}, {torch.cuda.device_count()} GPU(s): {torch.cuda.get_device_name(0)}"  # type: ignore[attr-defined]


def _device() -> str:
    try:
        from ..core.devices import select_device

        choice = select_device("auto")
    except Exception as error:  # noqa: BLE001 - diagnostics describe problems, they do not raise them
        return f"unknown ({error})"
    return f"{choice.device} ({choice.reason})"
