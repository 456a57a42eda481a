"""What the engine needs in QGIS's own Python, how to tell a user what is missing, and a diagnostics line.

Installation and "GPU found but not used" are what users of deep-learning plugins
struggle with most, so a missing package is reported with the exact command for
the Python that QGIS runs, and every run's log starts with one line that says which
versions and which device were found. Nothing here imports torch at module level.
"""

from __future__ import annotations

import importlib
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

#: (module to import, package name for pip), in the order the message lists them.
REQUIRED = (("torch", "torch"), ("torchvision", "torchvision"), ("rasterio", "rasterio"))

PYTORCH_URL = "https://pytorch.org/get-started/locally/"

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


def missing_packages() -> list[MissingPackage]:
    """Required packages that cannot be imported, with the reason (absent, or broken like a failing DLL)."""
    missing = []
    for module, pip_name in REQUIRED:
        try:
            importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 - any import failure makes the package unusable
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            missing.append(MissingPackage(module, pip_name, reason))
    return missing


def python_executable() -> str:
    """The Python interpreter QGIS embeds.

    ``sys.executable`` cannot be trusted inside QGIS: it is QGIS itself, or whatever
    ``python3`` comes first on the PATH. The interpreter of the running Python sits at a
    fixed place under ``sys.exec_prefix``.
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    prefix = Path(sys.exec_prefix)
    for candidate in (prefix / "python.exe", prefix / "bin" / f"python{version}", prefix / "bin" / "python3"):
        if candidate.is_file():
            return str(candidate)
    executable = Path(sys.executable)
    return str(executable) if executable.name.lower().startswith("python") else "python3"


def install_instructions(packages: list[str]) -> str:
    """The exact command that installs ``packages`` into QGIS's Python on this system."""
    names = " ".join(packages)
    system = platform.system()
    if system == "Windows":
        return ("close QGIS, open the 'OSGeo4W Shell' from the Start menu (as administrator if QGIS is installed "
                f"for all users) and run:  python -m pip install {names}")
    python = python_executable()
    if system == "Darwin":
        return f"close QGIS, open Terminal and run:  \"{python}\" -m pip install --user {names}"
    command = f"\"{python}\" -m pip install --user {names}"
    if Path(python).is_relative_to("/usr"):
        # Debian/Ubuntu mark the system Python as externally managed (PEP 668).
        command += " --break-system-packages"
    return f"close QGIS, open a terminal and run:  {command}"


def missing_message(missing: list[MissingPackage]) -> str:
    """The user-facing explanation: what is missing, why, and the command that fixes it."""
    listed = "; ".join(f"{m.pip_name} ({m.reason})" for m in missing)
    packages = [m.pip_name for m in missing]
    message = (
        f"This algorithm runs deep-learning models and needs {', '.join(packages)} in the Python that QGIS uses "
        f"(Python {platform.python_version()}, {python_executable()}), but it cannot import: {listed}. "
        f"To install: {install_instructions(packages)}  and then start QGIS again."
    )
    if "torch" in packages:
        message += (f" That installs the CPU build of PyTorch; for an NVIDIA GPU pick the CUDA build of torch and "
                    f"torchvision for your system at {PYTORCH_URL} and run the pip command it shows with the same "
                    "Python.")
    return message


def require_engine() -> None:
    """Stop a run, with what to do, when this QGIS's Python cannot run the engine.

    Raises:
        QgsProcessingException: The Python is too old, or a required package is missing.
    """
    from qgis.core import QgsProcessingException

    problem = python_problem()
    if problem:
        raise QgsProcessingException(problem)
    missing = missing_packages()
    if missing:
        raise QgsProcessingException(missing_message(missing))


def diagnostics() -> str:
    """One line for every run's log: QGIS, Python, torch, CUDA, GDAL and rasterio versions, and the device found."""
    parts = [f"QGIS {_qgis_version()}", f"Python {platform.python_version()}"]
    try:
        torch = importlib.import_module("torch")
    except Exception:  # noqa: BLE001 - reported as missing, the run then explains how to install it
        parts += ["torch: not installed", "CUDA: n/a"]
        device = "none (torch missing)"
    else:
        parts.append(f"torch {torch.__version__}")
        parts.append(_cuda(torch))
        device = _device()
    parts.append(f"GDAL {_gdal_version()}")
    parts.append(f"rasterio {_module_version('rasterio')}")
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


def _module_version(name: str) -> str:
    try:
        module = importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a broken package is as good as absent here
        return "not installed"
    return str(getattr(module, "__version__", "unknown version"))


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
