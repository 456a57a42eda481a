"""Installs the engine's Python packages (torch, torchvision, ...) into a folder private to the plugin.

No Qt and no QGIS here: the dialog (:mod:`.installer_dialog`) drives this module, and
so do scripts and tests through ``python -m <plugin>.plugin.installer`` (see ``--help``).

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
  requires but inference never uses, is left out (see :data:`LEFT_OUT`).
* **A broken folder is found.** pip's ``RECORD`` files list every file with its size, so
  a truncated or half-deleted package is detected without importing it
  (:func:`check_folder`).

The versions come from ``runtime-requirements.txt`` next to this module, the same file
``make setup`` installs from.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

REQUIREMENTS_FILE = Path(__file__).with_name("runtime-requirements.txt")

#: Folder (inside the QGIS profile folder) that holds the private packages.
FOLDER_NAME = "semantic_change_dependencies"
POINTER = "active.txt"
#: At plugin load, staging folders younger than this are left alone (an install may be running in another
#: QGIS window on the same profile); an install started by the user removes every leftover.
STAGING_KEPT_S = 12 * 3600
MANIFEST = "install.json"
LOG = "last-install.log"

#: Packages of QGIS's own Python that an install must never shadow: the constraints file
#: holds them at the version QGIS has.
PROTECTED = ("numpy", "GDAL")

#: Packages whose presence in a resolved plan marks a CUDA build of torch on Linux.
CUDA_MARKERS = ("triton", "nvidia-", "cuda-")

#: Requirements of torch's CUDA build that inference never imports and that must not be installed: triton is
#: torch.compile's GPU code generator; its libtriton carries an LLVM of its own, and loading it into a QGIS
#: desktop that has already loaded Mesa's GL driver (which links another LLVM) kills QGIS. Without it torch
#: reports triton as unavailable, exactly as its CPU build does.
LEFT_OUT = ("triton", "pytorch-triton", "pytorch-triton-rocm")

PYTORCH_INDEX = "https://download.pytorch.org/whl"
#: CUDA builds PyTorch publishes for the pinned torch releases, newest first, and the
#: one PyPI's Linux wheel is built for.
CUDA_BUILDS = ("cu130", "cu128", "cu126")
PYPI_LINUX_CUDA = "cu130"

#: Disk space an install needs (staging folder, pip's temporary copy and download cache),
#: in GB: torch 2.13 CPU unpacks to about 0.8 GB, the CUDA build and NVIDIA's libraries to
#: about 4.5 GB on Linux.
SPACE_NEEDED_GB = {"cpu": 2.0, "cuda": 8.0}

#: Modules the plugin needs; a finished install must import those of its requirements file, in a separate
#: process, before it becomes active.
VERIFY_MODULES = ("torch", "torchvision")


class InstallError(RuntimeError):
    """An install that cannot go ahead or did not succeed; the message says what to do."""


class CancelledError(InstallError):
    """The user stopped the install; the previous state is untouched."""


# --- where things are -----------------------------------------------------------------------


def default_root(profile_folder: str | Path) -> Path:
    """The private folder for a QGIS profile folder (``QgsApplication.qgisSettingsDirPath()``)."""
    return Path(profile_folder) / FOLDER_NAME


def active_folder(root: str | Path) -> Path | None:
    """The folder the pointer file names, or None when nothing was installed (or the pointer is bad)."""
    root = Path(root)
    try:
        name = (root / POINTER).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    return root / name


def activate(root: str | Path) -> Path | None:
    """Put the active private folder first on ``sys.path`` (once); called when the plugin loads.

    The folder goes in front of QGIS's own site-packages so that a torch installed here
    wins over an old or broken one elsewhere; that is safe because an install never puts
    into it a package QGIS's Python already has in a usable version, and never numpy. It
    is added as a plain path entry, not with ``site.addsitedir``, so no ``.pth`` file in
    it runs. Folders of earlier installs are taken off ``sys.path``.

    Returns:
        The folder now on ``sys.path``, or None when there is none.
    """
    root = Path(root)
    folder = active_folder(root)
    stale = [entry for entry in sys.path if _is_inside(entry, root) and (folder is None or Path(entry) != folder)]
    for entry in stale:
        sys.path.remove(entry)
    with contextlib.suppress(OSError):
        remove_stale(root, staging_age_s=STAGING_KEPT_S)  # at start-up nothing is imported from them yet
    if folder is None or not folder.is_dir():
        return None
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    import importlib

    importlib.invalidate_caches()
    return folder


def in_use(folder: Path) -> bool:
    """Whether this process has imported a module from ``folder`` (its files must then stay until QGIS restarts)."""
    prefix = os.path.normcase(str(folder)) + os.sep
    return any(os.path.normcase(str(getattr(m, "__file__", None) or "")).startswith(prefix)
               for m in list(sys.modules.values()) if m is not None)


def remove_stale(root: Path, staging_age_s: float = 0) -> None:
    """Remove staging folders of cancelled or crashed installs and earlier installs nothing uses any more.

    A folder that this process imported from stays (a QGIS session that loaded torch keeps
    using its files until it restarts; Windows would refuse anyway): the next call removes it.
    Staging entries younger than ``staging_age_s`` stay: another QGIS window on the same
    profile may be installing right now.
    """
    active = active_folder(root)
    now = time.time()
    for path in root.iterdir() if root.is_dir() else ():
        staging = path.name.startswith(".staging-")
        stale = staging or (path.name.startswith("site-") and path != active)
        if not stale or in_use(path):
            continue
        with contextlib.suppress(OSError):
            if staging and now - path.stat().st_mtime < staging_age_s:
                continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _is_inside(entry: str, root: Path) -> bool:
    try:
        return Path(entry).resolve().is_relative_to(root.resolve())
    except (OSError, ValueError):
        return False


# --- QGIS's Python -------------------------------------------------------------------------


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
                                timeout=60, env=_clean_env(), **_no_window())
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


# --- GPU and CUDA --------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuInfo:
    """What ``nvidia-smi`` says; ``gpus`` is empty when there is no NVIDIA GPU or driver."""

    gpus: tuple[str, ...] = ()
    driver: str | None = None
    cuda: str | None = None  # the newest CUDA runtime the driver supports
    problem: str | None = None

    @property
    def fitting_build(self) -> str | None:
        """The newest CUDA build of torch this driver runs, or None (CPU build)."""
        return fitting_cuda_build(self.cuda) if self.gpus else None

    def describe(self) -> str:
        if not self.gpus:
            return f"no NVIDIA GPU found ({self.problem or 'nvidia-smi lists none'})"
        build = self.fitting_build
        fit = f"CUDA build {build} fits" if build else "no CUDA build of torch supports this driver: update it"
        return f"{', '.join(self.gpus)}; driver {self.driver}, CUDA {self.cuda}; {fit}"


def fitting_cuda_build(driver_cuda: str | None) -> str | None:
    """The newest of :data:`CUDA_BUILDS` whose CUDA version the driver supports (``"12.8"`` -> ``cu128``)."""
    if not driver_cuda:
        return None
    match = re.match(r"(\d+)\.(\d+)", driver_cuda)
    if not match:
        return None
    supported = (int(match[1]), int(match[2]))
    for build in CUDA_BUILDS:
        digits = build[2:]
        if (int(digits[:-1]), int(digits[-1])) <= supported:
            return build
    return None


def detect_gpu(nvidia_smi: str | None = None) -> GpuInfo:
    """Ask ``nvidia-smi`` (installed with every NVIDIA driver) for the GPUs, the driver and its CUDA version."""
    executable = nvidia_smi or shutil.which("nvidia-smi")
    if executable is None and platform.system() == "Windows":
        fallback = Path(os.environ.get("SYSTEMROOT", r"C:\Windows")) / "System32" / "nvidia-smi.exe"
        executable = str(fallback) if fallback.is_file() else None
    if executable is None:
        return GpuInfo(problem="nvidia-smi not found: no NVIDIA driver installed")
    try:
        listing = subprocess.run([executable, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30, **_no_window())
        summary = subprocess.run([executable], capture_output=True, text=True, timeout=30, **_no_window())
    except (OSError, subprocess.SubprocessError) as error:
        return GpuInfo(problem=f"nvidia-smi failed: {error}")
    if listing.returncode != 0:
        first = (listing.stdout + listing.stderr).strip().splitlines()
        return GpuInfo(problem=f"nvidia-smi failed: {first[0] if first else listing.returncode}")
    rows = [[c.strip() for c in line.split(",")] for line in listing.stdout.splitlines() if line.strip()]
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", summary.stdout)
    return GpuInfo(gpus=tuple(r[0] for r in rows), driver=rows[0][1] if rows and len(rows[0]) > 1 else None,
                   cuda=cuda[1] if cuda else None)


def choose_variant(gpu: GpuInfo) -> str:
    """``"cuda"`` when an NVIDIA GPU with a driver a CUDA build supports is present, else ``"cpu"``."""
    return "cuda" if gpu.fitting_build and platform.system() != "Darwin" else "cpu"


# --- disk space ----------------------------------------------------------------------------


def free_space_gb(folder: str | Path) -> float:
    """Free space on the drive of ``folder`` (or of its nearest existing parent)."""
    path = Path(folder).absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return shutil.disk_usage(path).free / 1e9


def space_problem(root: str | Path, variant: str) -> str | None:
    needed, free = SPACE_NEEDED_GB[variant], free_space_gb(root)
    if free >= needed:
        return None
    return (f"the {variant.upper()} build needs about {needed:.0f} GB free on the drive of {root}, "
            f"but only {free:.1f} GB are free: free some space and try again")


# --- what is there, what is broken ---------------------------------------------------------


@dataclass
class FolderCheck:
    """The private folder's state: which folder is active and which of its packages are damaged."""

    root: Path
    active: Path | None
    distributions: dict[str, str] = field(default_factory=dict)  # name -> version
    damaged: dict[str, list[str]] = field(default_factory=dict)  # name -> files missing or of the wrong size
    problem: str | None = None

    @property
    def broken(self) -> bool:
        return bool(self.damaged) or self.problem is not None

    def describe(self) -> str:
        if self.problem:
            return self.problem
        if self.active is None:
            return "nothing installed yet"
        if not self.damaged:
            return f"{len(self.distributions)} packages, intact"
        parts = []
        for name, files in sorted(self.damaged.items()):
            parts.append(f"{name} ({len(files)} file(s) missing or truncated, e.g. {files[0]})")
        return "damaged: " + "; ".join(parts) + ". Repair reinstalls them."


def check_folder(root: str | Path) -> FolderCheck:
    """Compare every file the active folder's ``*.dist-info/RECORD`` lists with the disk (presence and size).

    Hashing 1 GB of torch would take seconds; a size check finds truncated and missing files in a
    fraction of that, which is what an interrupted copy, a full disk or an over-eager virus scanner leaves.
    """
    root = Path(root)
    folder = active_folder(root)
    check = FolderCheck(root=root, active=folder)
    if folder is None:
        if (root / POINTER).exists():
            check.problem = f"the pointer file {root / POINTER} is unreadable or empty"
        return check
    if not folder.is_dir():
        check.problem = f"the active folder {folder} is missing"
        return check
    for record in sorted(folder.glob("*.dist-info/RECORD")):
        name, _, version = record.parent.name[: -len(".dist-info")].partition("-")
        check.distributions[name] = version
        bad = _record_problems(folder, record)
        if bad:
            check.damaged[name] = bad
    if not check.distributions and not _nothing_was_needed(folder):
        check.problem = f"the active folder {folder} holds no installed package"
    return check


def _nothing_was_needed(folder: Path) -> bool:
    """An install that found everything in QGIS's Python already leaves an empty folder with its manifest."""
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["installed"] == []
    except (OSError, ValueError, KeyError):
        return False


def _record_problems(folder: Path, record: Path) -> list[str]:
    bad = []
    with record.open(newline="", encoding="utf-8") as handle:
        for row in csv.reader(handle):
            if len(row) < 3 or not row[2]:
                continue  # RECORD itself and files pip does not size (e.g. .pyc)
            relative = row[0]
            path = (folder / relative)
            if ".." in Path(relative).parts:
                continue  # scripts placed outside the folder by --target
            try:
                size = path.stat().st_size
            except OSError:
                bad.append(relative)
                continue
            if size != int(row[2]):
                bad.append(relative)
    return bad


# --- probing the installed packages --------------------------------------------------------

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
    env = _clean_env()
    if folder is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(folder), *filter(None, [env.get("PYTHONPATH")])])
    try:
        result = subprocess.run([python, "-c", _PROBE_TORCH, *modules], capture_output=True, text=True,
                                timeout=timeout, env=env, **_no_window())
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


# --- the install ---------------------------------------------------------------------------


@dataclass
class Options:
    """How to install: the build and where packages come from (offline and corporate machines)."""

    variant: str = "cpu"  # "cpu" or "cuda"
    cuda_build: str | None = None  # e.g. "cu128"; None: the one that fits the driver (or PyPI's on Linux)
    find_links: list[str] = field(default_factory=list)  # local wheel folders
    index_url: str | None = None  # replaces the default index (a corporate mirror)
    no_index: bool = False  # only the wheel folders: for machines without network
    use_pytorch_index: bool = True  # add PyTorch's index for the chosen build where the default lacks it
    proxy: str | None = None
    requirements: Path = REQUIREMENTS_FILE

    def torch_index(self) -> str | None:
        """PyTorch's index for the chosen build, where pip's default index does not carry it."""
        if not self.use_pytorch_index or self.no_index:
            return None
        system = platform.system()
        if system == "Darwin":
            return None  # PyPI's macOS wheels are the only build (CPU and Apple GPU)
        if self.variant == "cpu":
            return f"{PYTORCH_INDEX}/cpu" if system == "Linux" else None  # Windows: PyPI's wheel is the CPU one
        build = self.cuda_build or PYPI_LINUX_CUDA
        if system == "Linux" and build == PYPI_LINUX_CUDA:
            return None
        return f"{PYTORCH_INDEX}/{build}"

    def pip_source_args(self) -> list[str]:
        args: list[str] = []
        if self.no_index:
            args.append("--no-index")
        if self.index_url:
            args += ["--index-url", self.index_url]
        index = self.torch_index()
        if index:
            args += ["--extra-index-url", index]
        for folder in self.find_links:
            args += ["--find-links", str(folder)]
        if self.proxy:
            args += ["--proxy", self.proxy]
        return args


@dataclass(frozen=True)
class Planned:
    name: str
    version: str
    url: str
    sha256: str | None


@dataclass
class Result:
    folder: Path
    installed: list[Planned]
    versions: dict


LineSink = Callable[[str], None]
ProgressSink = Callable[[float, str], None]


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
        self._process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._log: list[str] = []

    # -- public ------------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop pip now; :meth:`run` then raises :class:`CancelledError` and leaves the previous state as it was."""
        self._cancelled.set()
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                _kill_tree(self._process)

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
        staging = self.root / f".staging-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
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
            folder = self._swap(staging, plan, versions)
            self._emit(f"done in {time.time() - started:.0f} s: {folder} is active")
            return Result(folder=folder, installed=plan, versions=versions)
        except OSError as error:  # a full disk, a folder without write permission, a file a scanner holds
            self._emit(f"FAILED: {error}")
            raise InstallError(f"{error}; the previous state is unchanged") from error
        except InstallError as error:
            if self.cancelled and not isinstance(error, CancelledError):
                error = CancelledError("install cancelled; the previous state is unchanged")
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
        constraints = staging.parent / f"{staging.name}.constraints.txt"
        report = staging.parent / f"{staging.name}.report.json"
        try:
            constraints.write_text(self._constraints(python), encoding="utf-8")
            self._pip(python, ["install", "--dry-run", "--progress-bar", "off", "--report", str(report), "-r",
                               str(self.options.requirements),
                               "-c", str(constraints), *self.options.pip_source_args()], 0.02, 0.15)
            entries = json.loads(report.read_text(encoding="utf-8"))["install"]
        finally:
            constraints.unlink(missing_ok=True)
            report.unlink(missing_ok=True)
        plan = [Planned(e["metadata"]["name"], e["metadata"]["version"], e["download_info"]["url"],
                        _sha256(e["download_info"])) for e in entries]
        self._check_plan(plan)
        left_out = [p for p in plan if p.name.lower().replace("_", "-") in LEFT_OUT]
        if left_out:
            self._emit(f"leaving out {', '.join(p.name for p in left_out)}: only torch.compile uses it, inference "
                       "never does, and its LLVM crashes a QGIS desktop that has loaded Mesa's")
            plan = [p for p in plan if p not in left_out]
        self._emit("to install: " + ", ".join(f"{p.name} {p.version}" for p in plan))
        return plan

    def _constraints(self, python: str) -> str:
        """numpy and GDAL held at QGIS's versions; for a CPU build on Linux, every CUDA build made unresolvable."""
        lines = []
        versions = _installed_versions(python, PROTECTED)
        for name, version in versions.items():
            lines.append(f"{name}=={version}")
            self._emit(f"keeping QGIS's {name} {version}")
        if self.options.variant == "cpu" and platform.system() == "Linux":
            # PyPI's Linux torch is the CUDA build and needs triton; no CPU build does. A constraint no version
            # meets makes pip pass over every CUDA build and take a CPU one from the sources given.
            lines.append("triton<0")
        return "\n".join(lines) + "\n"

    def _check_plan(self, plan: list[Planned]) -> None:
        names = {p.name.lower().replace("_", "-"): p for p in plan}
        for protected in PROTECTED:
            if protected.lower() in names:
                raise InstallError(f"pip wants to install {protected} {names[protected.lower()].version}, which "
                                   "would replace QGIS's own: refused")
        torch = names.get("torch")
        if torch is None:
            return
        cuda_parts = [p.name for p in plan if p.name.lower().startswith(CUDA_MARKERS)]
        local = torch.version.partition("+")[2]
        if self.options.variant == "cpu" and (cuda_parts or local.startswith("cu")):
            raise InstallError(
                f"the sources offer only a CUDA build of torch ({torch.version}, with {', '.join(cuda_parts)}); "
                "for the CPU build give a wheel folder holding it or make PyTorch's CPU index reachable")
        if (self.options.variant == "cuda" and platform.system() != "Darwin"
                and (local == "cpu" or (platform.system() == "Linux" and not cuda_parts and not local))):
            raise InstallError(f"the sources offer only a CPU build of torch ({torch.version}) for a CUDA install: "
                               "make PyTorch's CUDA index reachable or give a wheel folder holding the CUDA build")

    def _install(self, python: str, plan: list[Planned], staging: Path) -> None:
        if not plan:
            self._emit("everything required is already in QGIS's Python; the private folder will be empty")
            return
        wanted = staging.parent / f"{staging.name}.requirements.txt"
        lines = [f"{p.name} @ {p.url}" + (f" --hash=sha256:{p.sha256}" if p.sha256 else "") for p in plan]
        wanted.write_text("\n".join(lines) + "\n", encoding="utf-8")
        hashes = ["--require-hashes"] if all(p.sha256 for p in plan) else []
        try:
            # Every line is a direct URL with its hash, so no index is asked again: only the proxy matters.
            proxy = ["--proxy", self.options.proxy] if self.options.proxy else []
            self._pip(python, ["install", "--target", str(staging), "--no-deps", "--no-compile", *hashes,
                               "--progress-bar", "off", "--no-index", "-r", str(wanted), *proxy],
                      0.15, 0.85, expected_lines=len(plan))
        finally:
            wanted.unlink(missing_ok=True)

    def _verify(self, python: str, staging: Path) -> dict:
        """Import every requirement (with the staging folder first on the path) in a separate process."""
        modules = requirement_modules(self.options.requirements)
        self._progress(0.87, f"checking that {', '.join(modules)} import")
        result = probe(python, staging, modules)
        failing = [name for name in modules if "error" in result.get(name, {"error": result.get("error")})]
        if self.cancelled:
            raise CancelledError("install cancelled; the previous state is unchanged")
        if failing:
            reasons = "; ".join(f"{n}: {result.get(n, {}).get('error', result.get('error'))}" for n in failing)
            raise InstallError(f"the new packages do not import ({reasons}); the previous state is unchanged")
        self._emit("import check: " + ", ".join(f"{n} {result[n]['version']}" for n in modules))
        return result

    def _swap(self, staging: Path, plan: list[Planned], versions: dict) -> Path:
        """Make the staging folder the active one: one rename, then one atomic replace of the pointer."""
        self._progress(0.95, "activating")
        if self.cancelled:
            raise CancelledError("install cancelled; the previous state is unchanged")
        previous = active_folder(self.root)
        manifest = {"installed": [asdict(p) for p in plan], "variant": self.options.variant,
                    "cuda_build": self.options.cuda_build, "python": self.python,
                    "date": time.strftime("%Y-%m-%d %H:%M:%S"), "versions": {
                        k: v.get("version") for k, v in versions.items() if isinstance(v, dict)}}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        final = self.root / f"site-{staging.name.removeprefix('.staging-')}"
        staging.rename(final)
        pointer = self.root / f".{POINTER}.{uuid.uuid4().hex[:6]}"
        pointer.write_text(final.name + "\n", encoding="utf-8")
        os.replace(pointer, self.root / POINTER)
        self._progress(1.0, "done")
        if previous is not None and previous != final and not in_use(previous):
            shutil.rmtree(previous, ignore_errors=True)
        return final

    def _remove_leftovers(self) -> None:
        """Staging folders of cancelled or crashed installs, and old folders Windows kept locked."""
        remove_stale(self.root)

    # -- pip ---------------------------------------------------------------------------

    def _pip(self, python: str, args: Sequence[str], start: float, end: float, expected_lines: int = 0) -> None:
        """Run pip, streaming its output line by line; progress moves with the packages pip reports."""
        if self.cancelled:
            raise CancelledError("install cancelled; the previous state is unchanged")
        command = [python, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
        self._emit("$ " + " ".join(command))
        env = _clean_env()
        env["PYTHONUNBUFFERED"] = "1"
        # pip's own temporary folders go next to the staging folder: on the same drive (its final move is a
        # rename, not a 5 GB copy) and removed with it when pip is cancelled.
        scratch = self.root / f".staging-tmp-{uuid.uuid4().hex[:6]}"
        scratch.mkdir(exist_ok=True)
        env.update(TMPDIR=str(scratch), TEMP=str(scratch), TMP=str(scratch))
        try:
            with self._lock:
                self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                                 env=env, bufsize=1, errors="replace", **_new_group())
        except OSError as error:
            raise InstallError(f"cannot run {python}: {error}") from error
        process = self._process
        seen = 0
        assert process.stdout is not None
        with process.stdout:
            for raw in process.stdout:
                line = raw.rstrip()
                if not line or "is ignored: it is neither a file nor a directory" in line:
                    continue
                self._emit(line)
                if line.startswith(("Collecting ", "Processing ", "Downloading ", "Obtaining ")):
                    seen += 1
                    total = max(expected_lines, seen + 1)
                    self._progress(start + (end - start) * min(seen / total, 0.95), line)
                elif line.startswith("Installing collected packages"):
                    self._progress(start + (end - start) * 0.95, "unpacking (torch is large: this takes a while)")
        code = process.wait()
        with self._lock:
            self._process = None
        shutil.rmtree(scratch, ignore_errors=True)
        if self.cancelled:
            raise CancelledError("install cancelled; the previous state is unchanged")
        if code != 0:
            if "No module named pip" in self.log:
                raise InstallError(f"{python} has no pip: install it (Debian/Ubuntu: sudo apt install python3-pip; "
                                   "OSGeo4W: the python3-pip package in the OSGeo4W installer)")
            raise InstallError(f"pip failed (exit status {code}): see the log above")
        self._progress(end, "")

    # -- reporting ---------------------------------------------------------------------

    def _emit(self, line: str) -> None:
        self._log.append(line)
        self._on_line(line)

    def _progress(self, fraction: float, what: str) -> None:
        self._on_progress(fraction, what)

    def _write_log(self) -> None:
        with contextlib.suppress(OSError):
            (self.root / LOG).write_text(self.log + "\n", encoding="utf-8")


def last_log(root: str | Path) -> str:
    try:
        return (Path(root) / LOG).read_text(encoding="utf-8")
    except OSError:
        return "(no install has run yet)"


def _sha256(download_info: dict) -> str | None:
    archive = download_info.get("archive_info", {})
    hashes = archive.get("hashes") or {}
    if "sha256" in hashes:
        return hashes["sha256"]
    value = archive.get("hash", "")
    return value.partition("=")[2] if value.startswith("sha256=") else None


def _installed_versions(python: str, names: Sequence[str]) -> dict[str, str]:
    code = ("import importlib.metadata as m, json, sys\nout = {}\nfor n in sys.argv[1:]:\n try: out[n] = m.version(n)\n"
            " except Exception: pass\nprint(json.dumps(out))")
    result = subprocess.run([python, "-c", code, *names], capture_output=True, text=True, timeout=60,
                            env=_clean_env(), **_no_window())
    if result.returncode != 0:
        raise InstallError(f"cannot run {python}: {result.stderr.strip()}")
    return json.loads(result.stdout)


def _clean_env() -> dict[str, str]:
    """The environment for QGIS's Python without ``PYTHONHOME``/``PYTHONPATH`` pointing into a private folder."""
    env = dict(os.environ)
    if "PYTHONPATH" in env:
        parts = [p for p in env["PYTHONPATH"].split(os.pathsep) if p and FOLDER_NAME not in p]
        env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


def _no_window() -> dict:
    """No console window flashing up on Windows for each subprocess."""
    return {"creationflags": subprocess.CREATE_NO_WINDOW} if sys.platform == "win32" else {}  # type: ignore[attr-defined]


def _new_group() -> dict:
    """pip in a process group of its own, so that Cancel stops it and whatever it started."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}  # type: ignore[attr-defined]
    return {"start_new_session": True}


def _kill_tree(process: subprocess.Popen[str]) -> None:
    if sys.platform == "win32":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False,
                       **_no_window())
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


# --- diagnostics ---------------------------------------------------------------------------


def diagnostics_text(root: str | Path, python: str | None, qgis_version: str = "unknown",
                     probed: dict | None = None, gpu: GpuInfo | None = None) -> str:
    """Everything a bug report about installation needs, as plain text ready to paste."""
    root = Path(root)
    gpu = gpu or detect_gpu()
    folder = active_folder(root)
    probed = probed if probed is not None else (probe(python, folder) if python else {"error": "no Python found"})
    check = check_folder(root)

    def version(name: str) -> str:
        entry = probed.get(name, {})
        return entry.get("version") or entry.get("error") or probed.get("error", "unknown")

    cuda = probed.get("cuda_build")
    lines = [
        "Semantic change detection: dependency diagnostics",
        f"QGIS: {qgis_version}",
        f"Python: {platform.python_version()} ({python or 'interpreter not found'})",
        f"Platform: {platform.platform()} ({platform.machine()})",
        f"torch: {version('torch')}" + (f" (from {probed['torch']['file']})" if "file" in probed.get("torch", {})
                                        else ""),
        f"torchvision: {version('torchvision')}",
        f"numpy: {version('numpy')}",
        f"CUDA build of torch: {cuda or 'none (CPU build)'}",
        f"CUDA usable: {probed.get('cuda_available', False)}" + (f" ({probed['cuda_error']})"
                                                                 if probed.get("cuda_error") else ""),
        f"Devices: {', '.join(probed.get('devices') or []) or 'CPU only'}"
        + ("; Apple MPS" if probed.get("mps_available") else ""),
        f"NVIDIA GPU / driver: {gpu.describe()}",
        f"Install folder: {root} (active: {folder or 'none'}; {check.describe()})",
        f"Free space there: {free_space_gb(root):.1f} GB",
        "",
        "Last install log:",
        last_log(root).rstrip(),
    ]
    return "\n".join(lines) + "\n"


# --- command line --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m semantic_change.plugin.installer",
        description="Install the plugin's Python packages into its private folder, outside QGIS's site-packages.")
    parser.add_argument("command", choices=("install", "check", "diagnostics", "detect"),
                        help="install (or repair); check the folder for damage; print diagnostics; detect the GPU")
    parser.add_argument("--root", help="the private folder (default: in the QGIS profile given by --profile)")
    parser.add_argument("--profile", help="the QGIS profile folder, e.g. ~/.local/share/QGIS/QGIS3/profiles/default")
    parser.add_argument("--python", help="QGIS's Python interpreter (default: this one)")
    parser.add_argument("--variant", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--cuda-build", choices=CUDA_BUILDS)
    parser.add_argument("--find-links", action="append", default=[], metavar="FOLDER", help="a local wheel folder")
    parser.add_argument("--index-url", help="a package index replacing the default (corporate mirror)")
    parser.add_argument("--no-index", action="store_true", help="use only the wheel folders (offline)")
    parser.add_argument("--no-pytorch-index", action="store_true", help="do not add PyTorch's index for the build")
    parser.add_argument("--proxy", help="proxy for pip, e.g. http://user:password@proxy:8080")
    args = parser.parse_args(argv)

    if args.root:
        root = Path(args.root)
    elif args.profile:
        root = default_root(args.profile)
    else:
        parser.error("give --root or --profile")
    python = args.python or sys.executable
    gpu = detect_gpu()
    if args.command == "detect":
        print(gpu.describe())
        print(f"build to install: {choose_variant(gpu)}" + (f" ({gpu.fitting_build})" if gpu.fitting_build else ""))
        return 0
    if args.command == "check":
        check = check_folder(root)
        print(check.describe())
        return 1 if check.broken else 0
    if args.command == "diagnostics":
        print(diagnostics_text(root, python, gpu=gpu))
        return 0
    variant = choose_variant(gpu) if args.variant == "auto" else args.variant
    options = Options(variant=variant, cuda_build=args.cuda_build or (gpu.fitting_build if variant == "cuda"
                                                                      else None),
                      find_links=args.find_links, index_url=args.index_url, no_index=args.no_index,
                      use_pytorch_index=not args.no_pytorch_index, proxy=args.proxy)
    installer = Installer(root, python=python, options=options, on_line=print)
    try:
        installer.run()
    except CancelledError as error:
        print(error, file=sys.stderr)
        return 130
    except InstallError as error:
        print(f"install failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
