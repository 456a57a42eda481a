"""What to install and from where: the options, the constraints, pip's resolved plan and the rules it must meet.

pip first resolves the requirements against QGIS's own Python (``--dry-run --report``), so only
what is missing or too old is installed; the install then takes exactly that plan, file by file
with the hashes pip resolved. The decisions around it live here, apart from running pip:

* **Nothing QGIS depends on is replaced.** The constraints hold numpy and GDAL at the versions
  QGIS has (:data:`PROTECTED`), and a plan that still contains one is refused.
* **CPU or CUDA is a choice, not an accident.** On Linux PyPI's default torch is the CUDA build;
  the CPU build comes from PyTorch's CPU index (or a local wheel folder). For a CPU install a
  constraint makes every CUDA build unresolvable (they all need ``triton`` on Linux), and the
  plan is checked against the choice before anything is installed (:func:`check_plan`).
* **Nothing that can crash QGIS is installed.** triton, which the CUDA build of torch requires
  but inference never uses, is left out (:data:`LEFT_OUT`).
* **Offline and corporate machines** give their own sources (:class:`Options`): local wheel
  folders, a mirror instead of PyPI, a proxy.
"""

from __future__ import annotations

import json
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InstallError
from .gpu import PYPI_LINUX_CUDA, PYTORCH_INDEX
from .layout import REQUIREMENTS_FILE
from .processes import clean_env, no_window

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


def installed_versions(python: str, names: Sequence[str]) -> dict[str, str]:
    """The versions of ``names`` that QGIS's Python has (those it lacks are left out)."""
    code = ("import importlib.metadata as m, json, sys\nout = {}\nfor n in sys.argv[1:]:\n try: out[n] = m.version(n)\n"
            " except Exception: pass\nprint(json.dumps(out))")
    result = subprocess.run([python, "-c", code, *names], capture_output=True, text=True, timeout=60,
                            env=clean_env(), **no_window())
    if result.returncode != 0:
        raise InstallError(f"cannot run {python}: {result.stderr.strip()}")
    return json.loads(result.stdout)


def constraints(kept: dict[str, str], variant: str) -> str:
    """The constraints file: ``kept`` (QGIS's numpy and GDAL) held; for a CPU build on Linux, every CUDA build
    made unresolvable."""
    lines = [f"{name}=={version}" for name, version in kept.items()]
    if variant == "cpu" and platform.system() == "Linux":
        # PyPI's Linux torch is the CUDA build and needs triton; no CPU build does. A constraint no version
        # meets makes pip pass over every CUDA build and take a CPU one from the sources given.
        lines.append("triton<0")
    return "\n".join(lines) + "\n"


def read_report(report: Path) -> list[Planned]:
    """The packages pip's ``--report`` of a dry run would install, each with its file and hash."""
    entries = json.loads(report.read_text(encoding="utf-8"))["install"]
    return [Planned(e["metadata"]["name"], e["metadata"]["version"], e["download_info"]["url"],
                    _sha256(e["download_info"])) for e in entries]


def _sha256(download_info: dict) -> str | None:
    archive = download_info.get("archive_info", {})
    hashes = archive.get("hashes") or {}
    if "sha256" in hashes:
        return hashes["sha256"]
    value = archive.get("hash", "")
    return value.partition("=")[2] if value.startswith("sha256=") else None


def check_plan(plan: list[Planned], variant: str) -> None:
    """Refuse a plan that would replace QGIS's numpy or GDAL, or that holds the other build of torch.

    Raises:
        InstallError: What the plan holds that it must not, and what to do.
    """
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
    if variant == "cpu" and (cuda_parts or local.startswith("cu")):
        raise InstallError(
            f"the sources offer only a CUDA build of torch ({torch.version}, with {', '.join(cuda_parts)}); "
            "for the CPU build give a wheel folder holding it or make PyTorch's CPU index reachable")
    if (variant == "cuda" and platform.system() != "Darwin"
            and (local == "cpu" or (platform.system() == "Linux" and not cuda_parts and not local))):
        raise InstallError(f"the sources offer only a CPU build of torch ({torch.version}) for a CUDA install: "
                           "make PyTorch's CUDA index reachable or give a wheel folder holding the CUDA build")


def left_out(plan: list[Planned]) -> list[Planned]:
    """The packages of ``plan`` that are never installed (:data:`LEFT_OUT`)."""
    return [p for p in plan if p.name.lower().replace("_", "-") in LEFT_OUT]


def requirement_lines(plan: list[Planned]) -> str:
    """The plan as a requirements file for the install: each package's exact file, with its hash when known."""
    lines = [f"{p.name} @ {p.url}" + (f" --hash=sha256:{p.sha256}" if p.sha256 else "") for p in plan]
    return "\n".join(lines) + "\n"
