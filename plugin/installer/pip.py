"""Running pip of QGIS's Python: its output streamed line by line, progress from the packages it reports.

pip runs as a child process (never ``import pip`` inside QGIS): a pip that fails or is killed
cannot take QGIS with it, and Cancel can stop it at any moment (:meth:`Pip.stop` kills its whole
process group). Each line pip prints goes to the install's log as it comes, so the dialog shows
what pip is doing; the progress bar moves through the part of the install a run of pip stands
for (:class:`Span`) as pip reports packages. pip's own temporary folders go into a temporary
folder inside the private folder: on the same drive as the staging folder, so that pip's final
move is a rename and not a 5 GB copy, and removed when pip ends, however it ends.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import InstallError
from .layout import temporary
from .processes import ChildProcess, clean_env

LineSink = Callable[[str], None]
ProgressSink = Callable[[float, str], None]

#: pip's lines that start work on one more package.
PACKAGE_LINES = ("Collecting ", "Processing ", "Downloading ", "Obtaining ")
#: pip's warning about an unused wheel folder, which says nothing to the user.
NOISE = "is ignored: it is neither a file nor a directory"


@dataclass(frozen=True)
class Span:
    """The stretch of the progress bar (fractions of the whole install) that one run of pip moves through."""

    start: float
    end: float
    expected_lines: int = 0  # packages pip will report, when known

    def after(self, seen: int) -> float:
        """Where the bar is after pip has reported ``seen`` packages (never at the end before pip is)."""
        total = max(self.expected_lines, seen + 1)
        return self.start + (self.end - self.start) * min(seen / total, 0.95)

    @property
    def unpacking(self) -> float:
        """Where the bar is while pip unpacks (the last, long step)."""
        return self.start + (self.end - self.start) * 0.95


class Pip:
    """pip of QGIS's Python, one run at a time; :meth:`stop` may be called from another thread."""

    def __init__(self, root: Path, emit: LineSink, progress: ProgressSink) -> None:
        self._root = root
        self._emit = emit
        self._progress = progress
        self._child = ChildProcess()

    def run(self, python: str, args: Sequence[str], span: Span) -> int:
        """Run ``python -m pip args`` to the end (or until stopped); returns pip's exit status.

        Raises:
            InstallError: ``python`` cannot be run.
        """
        command = [python, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
        self._emit("$ " + " ".join(command))
        env = clean_env()
        env["PYTHONUNBUFFERED"] = "1"
        scratch = temporary(self._root / "pip-tmp")
        scratch.mkdir()
        env.update(TMPDIR=str(scratch), TEMP=str(scratch), TMP=str(scratch))
        try:
            try:
                process = self._child.start(command, env)
            except OSError as error:
                raise InstallError(f"cannot run {python}: {error}") from error
            self._follow(process, span)
            return self._child.wait()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def stop(self) -> None:
        """Kill the running pip and whatever it started."""
        self._child.stop()

    def _follow(self, process: subprocess.Popen[str], span: Span) -> None:
        """Pass pip's lines on as they come, moving the progress bar with the packages pip reports."""
        seen = 0
        assert process.stdout is not None
        with process.stdout:
            for raw in process.stdout:
                line = raw.rstrip()
                if not line or NOISE in line:
                    continue
                self._emit(line)
                if line.startswith(PACKAGE_LINES):
                    seen += 1
                    self._progress(span.after(seen), line)
                elif line.startswith("Installing collected packages"):
                    self._progress(span.unpacking, "unpacking (torch is large: this takes a while)")
