"""Installs the engine's Python packages (torch, torchvision, ...) into a folder private to the plugin.

No Qt and no QGIS here, and nothing heavier than the standard library: the plugin loads this
package where torch is missing, to install it. The dialog (:mod:`..installer_dialog`) drives it,
and so do scripts and tests through ``python -m <plugin>.plugin.installer`` (see ``--help``).
The rest of the plugin imports only the names below, from this package; each job has a module:

* :mod:`.layout`: where things are: the private folder, its pointer, install folders, temporary names;
* :mod:`.activation`: putting the active install on ``sys.path`` at plugin load, removing stale folders;
* :mod:`.interpreter`: finding QGIS's Python interpreter (``sys.executable`` may be QGIS itself);
* :mod:`.gpu`: the NVIDIA GPU and driver, and the CUDA build of torch that fits them;
* :mod:`.checks`: disk space before an install, a damaged folder after one;
* :mod:`.probe`: what QGIS's Python imports, asked of a separate process;
* :mod:`.plan`: what to install from where: options, constraints, pip's plan and its rules;
* :mod:`.pip`: running pip: streamed output, progress, stopped by Cancel;
* :mod:`.processes`: child processes: a clean environment, no console windows, killing a process tree;
* :mod:`.install`: one install run, step by step (:class:`Installer`);
* :mod:`.diagnostics`: the text a bug report needs;
* :mod:`.cli`: the command line (``__main__`` runs it);
* :mod:`.errors`: :class:`InstallError` and :class:`CancelledError`.

Modules import each other downwards only (from :mod:`.cli` and :mod:`.install` down to
:mod:`.layout` and :mod:`.errors`), never this package, so there is no import circle.

Why it works the way it does:

* **QGIS's own interpreter runs pip.** Inside QGIS ``sys.executable`` is QGIS itself on
  Windows (``qgis-bin.exe``) and on macOS app bundles, so the interpreter is looked for
  next to ``sys.exec_prefix`` and every candidate is *run* to check that it is the same
  Python (version and prefix) before it is used (:func:`find_python`).
* **Nothing goes into QGIS's site-packages.** Packages are installed with
  ``pip install --target`` into a private folder in the user's QGIS profile
  (:func:`default_root`), which needs no administrator rights.
* **Nothing QGIS depends on is replaced.** pip first resolves the requirements against
  QGIS's own Python (``--dry-run --report``) with a constraints file holding the numpy
  (and GDAL) QGIS has, so only what is missing or too old is installed and numpy never
  is; the install itself then takes exactly that list with ``--no-deps``, each file
  checked against the hash pip resolved.
* **A failed or cancelled install changes nothing.** pip writes into a fresh staging
  folder; the result is import-tested in a separate process, and only then a pointer
  file (replaced atomically) names it as the active folder. The previous folder stays
  active until that moment, and a staging folder is never put on ``sys.path``.
* **CPU or CUDA is a choice, not an accident.** On Linux PyPI's default torch is the
  CUDA build; the CPU build comes from PyTorch's CPU index (or a local wheel folder). For
  a CPU install a constraint makes every CUDA build unresolvable (they all need
  ``triton`` on Linux), and the resolved plan is checked against the choice before
  anything is installed.
* **Nothing that can crash QGIS is installed.** triton, which the CUDA build of torch
  requires but inference never uses, is left out (see :data:`.plan.LEFT_OUT`).
* **A broken folder is found.** pip's ``RECORD`` files list every file with its size, so
  a truncated or half-deleted package is detected without importing it
  (:func:`check_folder`).

The versions come from ``runtime-requirements.txt`` in the plugin's folder, the same file
``make setup`` installs from.
"""

from __future__ import annotations

from .activation import activate
from .checks import SPACE_NEEDED_GB, FolderCheck, check_folder, free_space_gb
from .cli import main
from .diagnostics import diagnostics_text
from .errors import CancelledError, InstallError
from .gpu import CUDA_BUILDS, PYPI_LINUX_CUDA, PYTORCH_INDEX, GpuInfo, choose_variant, detect_gpu, fitting_cuda_build
from .install import Installer, Result
from .interpreter import PythonInfo, describe_python, find_python, python_candidates
from .layout import FOLDER_NAME, MANIFEST, POINTER, REQUIREMENTS_FILE, active_folder, default_root, last_log
from .plan import Options, Planned
from .probe import PROBED, missing_from_probe, probe, requirement_modules

__all__ = [
    "CUDA_BUILDS",
    "FOLDER_NAME",
    "MANIFEST",
    "POINTER",
    "PROBED",
    "PYPI_LINUX_CUDA",
    "PYTORCH_INDEX",
    "REQUIREMENTS_FILE",
    "SPACE_NEEDED_GB",
    "CancelledError",
    "FolderCheck",
    "GpuInfo",
    "InstallError",
    "Installer",
    "Options",
    "Planned",
    "PythonInfo",
    "Result",
    "activate",
    "active_folder",
    "check_folder",
    "choose_variant",
    "default_root",
    "describe_python",
    "detect_gpu",
    "diagnostics_text",
    "find_python",
    "fitting_cuda_build",
    "free_space_gb",
    "last_log",
    "main",
    "missing_from_probe",
    "probe",
    "python_candidates",
    "requirement_modules",
]
