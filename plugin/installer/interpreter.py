"""Finding the interpreter of QGIS's Python, the one pip must run with.

Inside QGIS ``sys.executable`` is QGIS itself on Windows (``qgis-bin.exe``) and in macOS app
bundles, so the interpreter is looked for next to ``sys.exec_prefix`` and the other places each
platform's QGIS puts it (:func:`python_candidates`), and every candidate is *run* to check that it
is the same Python, same version and same prefix, before it is used (:func:`find_python`):
packages built for another Python would not import in QGIS.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import InstallError
from .processes import clean_env, no_window


@dataclass(frozen=True)
class PythonInfo:
    executable: str
    version: str
    prefix: str
    pip: str | None  # pip's version, None when pip is missing


def python_candidates() -> list[Path]:
    """Where the interpreter of the running Python can be, most likely first, per platform."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    prefixes = [Path(sys.exec_prefix), Path(sys.base_exec_prefix), Path(sys.prefix)]
    executable = Path(sys.executable)
    candidates: list[Path] = []
    if platform.system() == "Windows":
        # OSGeo4W and the standalone installer: <root>\apps\Python3x\python.exe; sys.executable is qgis-bin.exe.
        candidates += [p / "python.exe" for p in prefixes]
        candidates += [executable.parent / "python.exe", executable.parent / "python3.exe"]
    else:
        for p in prefixes:
            candidates += [p / "bin" / f"python{version}", p / "bin" / "python3"]
        # macOS app bundles: QGIS.app/Contents/MacOS/QGIS, with the interpreter in Contents/MacOS/bin or in the
        # bundled Python.framework.
        candidates += [executable.parent / "bin" / f"python{version}", executable.parent / "bin" / "python3"]
        framework = executable.parent.parent / "Frameworks" / "Python.framework" / "Versions" / version / "bin"
        candidates += [framework / f"python{version}", framework / "python3"]
    if executable.name.lower().startswith("python"):
        candidates.insert(0, executable)
    unique: list[Path] = []
    for candidate in candidates:
        if candidate not in unique:
            unique.append(candidate)
    return unique


_PROBE_PYTHON = (
    "import sys, platform\n"
    "try:\n import pip; v = pip.__version__\n"
    "except Exception: v = None\n"
    "print(platform.python_version()); print(sys.prefix); print(v)\n"
)


def describe_python(executable: str | Path) -> PythonInfo | None:
    """Run ``executable`` and say what it is, or None when it does not run."""
    try:
        result = subprocess.run([str(executable), "-c", _PROBE_PYTHON], capture_output=True, text=True,
                                timeout=60, env=clean_env(), **no_window())
    except (OSError, subprocess.SubprocessError):
        return None
    lines = result.stdout.splitlines()
    if result.returncode != 0 or len(lines) < 3:
        return None
    return PythonInfo(str(executable), lines[0], lines[1], None if lines[2] == "None" else lines[2])


def find_python() -> PythonInfo:
    """The interpreter of the Python that is running (QGIS's), checked by running it.

    Raises:
        InstallError: None of the candidates is the same Python.
    """
    wanted = platform.python_version()
    tried = []
    for candidate in python_candidates():
        if not candidate.is_file():
            continue
        info = describe_python(candidate)
        tried.append(f"{candidate} ({'does not run' if info is None else 'Python ' + info.version})")
        if info is not None and info.version == wanted and _same_prefix(info.prefix):
            return info
    raise InstallError(
        f"cannot find the interpreter of QGIS's Python {wanted} (prefix {sys.prefix}); tried: "
        f"{'; '.join(tried) or 'nothing found'}. Run the installer from a terminal with --python <path>.")


def _same_prefix(prefix: str) -> bool:
    known = {os.path.normcase(os.path.realpath(p)) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    return os.path.normcase(os.path.realpath(prefix)) in known
