"""One install run: resolve, install into a staging folder, import-test it, then make it the active folder.

The order of the steps is what makes an install safe to fail or cancel at any moment:

1. find QGIS's interpreter (:mod:`.interpreter`) and check the disk space (:mod:`.checks`);
2. let pip resolve the requirements against QGIS's Python into a plan, and check the plan
   (:mod:`.plan`);
3. install exactly the plan into a fresh staging folder with ``--no-deps``, each file checked
   against the hash pip resolved (:mod:`.pip`);
4. import the new packages from the staging folder in a separate process (:mod:`.probe`);
5. swap: rename the staging folder to its final name, write its manifest, and replace the pointer
   file atomically (:mod:`.layout`).

Until step 5 the previous folder stays active and the staging folder is never on ``sys.path``,
so a failure or a Cancel changes nothing; the staging folder is removed whatever happens. The
whole log goes to the private folder for the diagnostics text.
"""

from __future__ import annotations

import contextlib
import json
import platform
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .activation import in_use, remove_stale
from .checks import space_problem
from .errors import CancelledError, InstallError
from .interpreter import find_python
from .layout import MANIFEST, active_folder, new_site, set_active, temporary, write_log
from .pip import LineSink, Pip, ProgressSink, Span
from .plan import (
    PROTECTED,
    Options,
    Planned,
    check_plan,
    constraints,
    installed_versions,
    left_out,
    read_report,
    requirement_lines,
)
from .probe import probe, requirement_modules

CANCELLED = "install cancelled; the previous state is unchanged"


@dataclass
class Result:
    folder: Path
    installed: list[Planned]
    versions: dict


class Installer:
    """One install run; :meth:`cancel` may be called from another thread (the dialog's Cancel button)."""

    def __init__(self, root: str | Path, python: str | None = None, options: Options | None = None,
                 on_line: LineSink | None = None, on_progress: ProgressSink | None = None) -> None:
        self.root = Path(root)
        self.python = python
        self.options = options or Options()
        self._on_line = on_line or (lambda line: None)
        self._on_progress = on_progress or (lambda fraction, what: None)
        self._cancelled = threading.Event()
        self._log: list[str] = []
        self._pip_runner = Pip(self.root, self._emit, self._progress)

    # -- public ------------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop pip now; :meth:`run` then raises :class:`CancelledError` and leaves the previous state as it was."""
        self._cancelled.set()
        self._pip_runner.stop()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def run(self) -> Result:
        """Resolve, install into a staging folder, import-test it, then make it the active folder.

        Raises:
            CancelledError: :meth:`cancel` was called; nothing changed.
            InstallError: Something failed; nothing changed, and the message and log say why.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        final = new_site(self.root)
        staging = temporary(final)
        started = time.time()
        try:
            python = self.python or find_python().executable
            self.python = python
            self._emit(f"QGIS's Python: {python} (Python {platform.python_version()}); installing into {self.root}")
            self._emit(f"build: {self.options.variant.upper()}"
                       + (f" ({self.options.cuda_build})" if self.options.cuda_build else ""))
            problem = space_problem(self.root, self.options.variant)
            if problem:
                raise InstallError(problem)
            self._remove_leftovers()
            plan = self._plan(python, staging)
            self._install(python, plan, staging)
            versions = self._verify(python, staging)
            folder = self._swap(staging, final, plan, versions)
            self._emit(f"done in {time.time() - started:.0f} s: {folder} is active")
            return Result(folder=folder, installed=plan, versions=versions)
        except OSError as error:  # a full disk, a folder without write permission, a file a scanner holds
            self._emit(f"FAILED: {error}")
            raise InstallError(f"{error}; the previous state is unchanged") from error
        except InstallError as error:
            if self.cancelled and not isinstance(error, CancelledError):
                error = CancelledError(CANCELLED)
            self._emit(f"FAILED: {error}" if not isinstance(error, CancelledError) else str(error))
            raise error from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            self._write_log()

    @property
    def log(self) -> str:
        return "\n".join(self._log)

    # -- steps -------------------------------------------------------------------------

    def _plan(self, python: str, staging: Path) -> list[Planned]:
        """Let pip resolve the requirements against QGIS's Python: what is missing or too old, and from where."""
        self._progress(0.02, "resolving versions")
        staging.mkdir()
        constraints_file = temporary(self.root / "constraints.txt")
        report = temporary(self.root / "report.json")
        try:
            constraints_file.write_text(self._constraints(python), encoding="utf-8")
            self._pip(python, ["install", "--dry-run", "--progress-bar", "off", "--report", str(report), "-r",
                               str(self.options.requirements),
                               "-c", str(constraints_file), *self.options.pip_source_args()], Span(0.02, 0.15))
            plan = read_report(report)
        finally:
            constraints_file.unlink(missing_ok=True)
            report.unlink(missing_ok=True)
        self._check_plan(plan)
        dropped = left_out(plan)
        if dropped:
            self._emit(f"leaving out {', '.join(p.name for p in dropped)}: only torch.compile uses it, inference "
                       "never does, and its LLVM crashes a QGIS desktop that has loaded Mesa's")
            plan = [p for p in plan if p not in dropped]
        self._emit("to install: " + ", ".join(f"{p.name} {p.version}" for p in plan))
        return plan

    def _constraints(self, python: str) -> str:
        """numpy and GDAL held at QGIS's versions; for a CPU build on Linux, every CUDA build made unresolvable."""
        kept = installed_versions(python, PROTECTED)
        for name, version in kept.items():
            self._emit(f"keeping QGIS's {name} {version}")
        return constraints(kept, self.options.variant)

    def _check_plan(self, plan: list[Planned]) -> None:
        check_plan(plan, self.options.variant)

    def _install(self, python: str, plan: list[Planned], staging: Path) -> None:
        if not plan:
            self._emit("everything required is already in QGIS's Python; the private folder will be empty")
            return
        wanted = temporary(self.root / "requirements.txt")
        wanted.write_text(requirement_lines(plan), encoding="utf-8")
        hashes = ["--require-hashes"] if all(p.sha256 for p in plan) else []
        try:
            # Every line is a direct URL with its hash, so no index is asked again: only the proxy matters.
            proxy = ["--proxy", self.options.proxy] if self.options.proxy else []
            self._pip(python, ["install", "--target", str(staging), "--no-deps", "--no-compile", *hashes,
                               "--progress-bar", "off", "--no-index", "-r", str(wanted), *proxy],
                      Span(0.15, 0.85, expected_lines=len(plan)))
        finally:
            wanted.unlink(missing_ok=True)

    def _verify(self, python: str, staging: Path) -> dict:
        """Import every requirement (with the staging folder first on the path) in a separate process."""
        modules = requirement_modules(self.options.requirements)
        self._progress(0.87, f"checking that {', '.join(modules)} import")
        result = probe(python, staging, modules)
        failing = [name for name in modules if "error" in result.get(name, {"error": result.get("error")})]
        if self.cancelled:
            raise CancelledError(CANCELLED)
        if failing:
            reasons = "; ".join(f"{n}: {result.get(n, {}).get('error', result.get('error'))}" for n in failing)
            raise InstallError(f"the new packages do not import ({reasons}); the previous state is unchanged")
        self._emit("import check: " + ", ".join(f"{n} {result[n]['version']}" for n in modules))
        return result

    def _swap(self, staging: Path, final: Path, plan: list[Planned], versions: dict) -> Path:
        """Make the staging folder the active one: one rename, then one atomic replace of the pointer."""
        self._progress(0.95, "activating")
        if self.cancelled:
            raise CancelledError(CANCELLED)
        previous = active_folder(self.root)
        (staging / MANIFEST).write_text(json.dumps(self._manifest(plan, versions), indent=2), encoding="utf-8")
        staging.rename(final)
        set_active(self.root, final)
        self._progress(1.0, "done")
        if previous is not None and previous != final and not in_use(previous):
            shutil.rmtree(previous, ignore_errors=True)
        return final

    def _manifest(self, plan: list[Planned], versions: dict) -> dict:
        """What an install put in its folder, from where, for which build and Python: ``install.json``."""
        return {"installed": [asdict(p) for p in plan], "variant": self.options.variant,
                "cuda_build": self.options.cuda_build, "python": self.python,
                "date": time.strftime("%Y-%m-%d %H:%M:%S"), "versions": {
                    k: v.get("version") for k, v in versions.items() if isinstance(v, dict)}}

    def _remove_leftovers(self) -> None:
        """Staging folders of cancelled or crashed installs, and old folders Windows kept locked."""
        remove_stale(self.root)

    # -- pip ---------------------------------------------------------------------------

    def _pip(self, python: str, args: Sequence[str], span: Span) -> None:
        """Run pip, streaming its output line by line; progress moves with the packages pip reports."""
        if self.cancelled:
            raise CancelledError(CANCELLED)
        code = self._pip_runner.run(python, args, span)
        if self.cancelled:
            raise CancelledError(CANCELLED)
        if code != 0:
            if "No module named pip" in self.log:
                raise InstallError(f"{python} has no pip: install it (Debian/Ubuntu: sudo apt install python3-pip; "
                                   "OSGeo4W: the python3-pip package in the OSGeo4W installer)")
            raise InstallError(f"pip failed (exit status {code}): see the log above")
        self._progress(span.end, "")

    # -- reporting ---------------------------------------------------------------------

    def _emit(self, line: str) -> None:
        self._log.append(line)
        self._on_line(line)

    def _progress(self, fraction: float, what: str) -> None:
        self._on_progress(fraction, what)

    def _write_log(self) -> None:
        with contextlib.suppress(OSError):
            write_log(self.root, self.log)
