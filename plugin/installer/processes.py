"""Starting and stopping the child processes the installer runs (QGIS's Python, pip, ``nvidia-smi``).

Everything slow or risky runs in a child process: pip, the import test of torch (whose native
libraries must not be loaded into QGIS, and which must not crash it), and the probes of QGIS's
Python. That needs three things on every platform, kept here in one place:

* the environment of QGIS's Python without the private folder on ``PYTHONPATH``
  (:func:`clean_env`), so that a check sees what QGIS's Python has, not what an earlier
  install added;
* no console window flashing up on Windows for each child (:func:`no_window`);
* a Cancel that stops pip *and everything it started*: pip runs in a process group of its
  own (:func:`new_group`), and :class:`ChildProcess` kills that whole group
  (:func:`kill_tree`), ``taskkill /T`` on Windows.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

from .layout import FOLDER_NAME


def clean_env() -> dict[str, str]:
    """The environment for QGIS's Python without ``PYTHONHOME``/``PYTHONPATH`` pointing into a private folder."""
    env = dict(os.environ)
    if "PYTHONPATH" in env:
        parts = [p for p in env["PYTHONPATH"].split(os.pathsep) if p and FOLDER_NAME not in p]
        env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


def no_window() -> dict:
    """No console window flashing up on Windows for each subprocess."""
    return {"creationflags": subprocess.CREATE_NO_WINDOW} if sys.platform == "win32" else {}  # type: ignore[attr-defined]


def new_group() -> dict:
    """pip in a process group of its own, so that Cancel stops it and whatever it started."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}  # type: ignore[attr-defined]
    return {"start_new_session": True}


def kill_tree(process: subprocess.Popen[str]) -> None:
    """Stop ``process`` and every process it started (it must have been started with :func:`new_group`)."""
    if sys.platform == "win32":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False,
                       **no_window())
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except OSError:
        return
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGKILL)


class ChildProcess:
    """At most one running child at a time, with its output as text lines, which another thread may stop."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def start(self, command: Sequence[str], env: dict[str, str]) -> subprocess.Popen[str]:
        """Start ``command`` in a process group of its own, stdout and stderr merged, line-buffered.

        Raises:
            OSError: The program cannot be run.
        """
        with self._lock:
            self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                             env=env, bufsize=1, errors="replace", **new_group())
            return self._process

    def wait(self) -> int:
        """Wait for the child to end; returns its exit status."""
        assert self._process is not None
        code = self._process.wait()
        with self._lock:
            self._process = None
        return code

    def stop(self) -> None:
        """Kill the child and everything it started, if it still runs (from any thread)."""
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                kill_tree(self._process)
