"""What QGIS's Python can import, asked of a separate process: the installer's only way to look at torch.

A separate process, so that what is installed can be checked without loading torch (and its
native libraries) into QGIS, and so that a crashing package cannot take QGIS down. The dialog
uses it to list what is there and what is missing, an install uses it as the import test of the
new folder before it becomes active, and the diagnostics text reports it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .layout import REQUIREMENTS_FILE
from .processes import clean_env, no_window

#: Modules the plugin needs; a finished install must import those of its requirements file, in a separate
#: process, before it becomes active.
VERIFY_MODULES = ("torch", "torchvision")

_PROBE_TORCH = r"""
import importlib, json, sys
out = {}
for name in sys.argv[1:]:
    try:
        module = importlib.import_module(name)
        out[name] = {"version": str(getattr(module, "__version__", "?")), "file": str(getattr(module, "__file__", ""))}
    except Exception as error:
        out[name] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
if "version" in out.get("torch", {}):
    import torch
    out["cuda_build"] = torch.version.cuda
    try:
        out["cuda_available"] = bool(torch.cuda.is_available())
        out["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception as error:
        out["cuda_available"] = False
        out["cuda_error"] = str(error)
    mps = getattr(torch.backends, "mps", None)
    out["mps_available"] = bool(mps is not None and mps.is_available())
print("PROBE" + json.dumps(out))
"""


PROBED = ("torch", "torchvision", "numpy")


def requirement_modules(requirements: Path = REQUIREMENTS_FILE) -> list[str]:
    """The modules the packages of a requirements file provide (``torch``, ``torchvision``)."""
    modules = []
    for line in requirements.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\s*([A-Za-z0-9_.-]+)", line.split("#", 1)[0])
        if match:
            modules.append(match[1].lower().replace("-", "_"))
    return modules


def probe(python: str, folder: str | Path | None, modules: Sequence[str] = PROBED, timeout: float = 180) -> dict:
    """Import ``modules`` (and report torch's devices) in a separate process of QGIS's Python, ``folder`` first.

    A separate process, so that what is installed can be checked without loading torch (and
    its native libraries) into QGIS, and so that a crashing package cannot take QGIS down.
    """
    env = clean_env()
    if folder is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(folder), *filter(None, [env.get("PYTHONPATH")])])
    try:
        result = subprocess.run([python, "-c", _PROBE_TORCH, *modules], capture_output=True, text=True,
                                timeout=timeout, env=env, **no_window())
    except subprocess.TimeoutExpired:
        return {"error": f"importing torch took longer than {timeout:.0f} s"}
    except OSError as error:
        return {"error": f"cannot run {python}: {error}"}
    for line in result.stdout.splitlines():
        if line.startswith("PROBE"):
            return json.loads(line[len("PROBE"):])
    tail = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
    return {"error": f"importing torch crashed the Python process: {tail}"}


def missing_from_probe(result: dict) -> list[str]:
    """The required modules the probe could not import."""
    if "error" in result:
        return list(VERIFY_MODULES)
    return [name for name in VERIFY_MODULES if "error" in result.get(name, {"error": ""})]
