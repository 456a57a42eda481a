"""The real QGIS desktop under Xvfb, a fresh profile, the plugin enabled (import as ``qgis_desktop``).

The offscreen QGIS of the other tests never loads an OpenGL driver; the desktop
does (Mesa's, under Xvfb), and some crashes only happen there. A run here starts
``qgis`` with ``--code`` on a startup script; the script calls :func:`finish` with a
JSON-serialisable answer, which is written to a file and QGIS quits. A crash shows
as a missing answer and the exit status.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN = "semantic_change"
VENV = sysconfig.get_paths()["purelib"]

requires_desktop = pytest.mark.skipif(
    not (shutil.which("qgis") and shutil.which("xvfb-run")),
    reason="the QGIS desktop and xvfb-run are needed (make setup installs them as root)")

#: Runs first in the startup script: collects what QGIS loaded and defines ``finish``.
PROLOGUE = '''
import json, os, traceback
from qgis.utils import iface
from qgis.core import QgsApplication, QgsMessageLog, Qgis
from qgis.PyQt.QtCore import QTimer

ANSWER = {answer!r}
messages = []
QgsApplication.messageLog().messageReceived.connect(
    lambda text, tag, level: messages.append({{"text": text, "tag": tag, "level": int(level)}}))

def mapped_libraries():
    with open("/proc/self/maps") as maps:
        return sorted({{line.split()[-1] for line in maps if line.rstrip().endswith(".so") or ".so." in line}})

def finish(answer):
    answer["libraries"] = mapped_libraries()
    answer["messages"] = messages
    with open(ANSWER, "w") as out:
        json.dump(answer, out, default=str)
    os._exit(0)

def guarded(body):
    def run():
        try:
            body()
        except Exception:
            finish({{"error": traceback.format_exc()}})
    return run
'''


@dataclass
class DesktopRun:
    returncode: int
    answer: dict | None
    log: str


def run_in_desktop(script: str, folder: Path, timeout: float = 150) -> DesktopRun:
    """Start the QGIS desktop under Xvfb with the plugin enabled in a fresh profile, run ``script``.

    ``script`` runs after the prologue (``finish``, ``guarded``, ``iface``, ``QTimer``
    are defined) while QGIS starts; it should schedule its work with
    ``QTimer.singleShot(0, guarded(work))`` and end it with ``finish({...})``.
    """
    plugins = folder / "plugins"
    plugins.mkdir(parents=True)
    (plugins / PLUGIN).symlink_to(REPO, target_is_directory=True)
    settings = folder / "profiles" / "profiles" / "default" / "QGIS"
    settings.mkdir(parents=True)
    (settings / "QGIS3.ini").write_text(f"[PythonPlugins]\n{PLUGIN}=true\n\n[qgis]\ncheckVersion=false\n")
    answer = folder / "answer.json"
    startup = folder / "startup.py"
    startup.write_text(PROLOGUE.format(answer=str(answer)) + textwrap.dedent(script))
    env = {key: value for key, value in os.environ.items()
           if key not in ("QT_QPA_PLATFORM", "PYTHONPATH", "QGIS_CUSTOM_CONFIG_PATH", "QGIS_OPTIONS_PATH")}
    env.update(PYTHONPATH=VENV, QGIS_PLUGINPATH=str(plugins), OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1",
               XDG_RUNTIME_DIR=str(folder))
    command = ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24", "qgis", "--profiles-path",
               str(folder / "profiles"), "--profile", "default", "--nologo", "--noversioncheck", "--code", str(startup)]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        returncode, log = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as expired:
        returncode, log = -1, f"timed out after {timeout} s: {expired.stdout!r} {expired.stderr!r}"
    return DesktopRun(returncode, json.loads(answer.read_text()) if answer.exists() else None, log)
