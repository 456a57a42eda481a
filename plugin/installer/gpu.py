"""Which build of torch to install: the NVIDIA GPU and driver present, and the CUDA build that fits them.

PyTorch publishes torch for a few CUDA versions (:data:`CUDA_BUILDS`); a build runs only on a
driver that supports its CUDA version. ``nvidia-smi``, installed with every NVIDIA driver, says
which GPUs there are and the newest CUDA version the driver supports (:func:`detect_gpu`), so the
newest build not newer than that is offered (:func:`fitting_cuda_build`), and the CPU build where
there is no NVIDIA GPU, or a driver older than every build (:func:`choose_variant`). macOS has
no CUDA: PyPI's build there also uses the Apple GPU. Where each build comes from is
:data:`PYTORCH_INDEX` (see :meth:`.plan.Options.torch_index`).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .processes import no_window

PYTORCH_INDEX = "https://download.pytorch.org/whl"
#: CUDA builds PyTorch publishes for the pinned torch releases, newest first, and the
#: one PyPI's Linux wheel is built for.
CUDA_BUILDS = ("cu130", "cu128", "cu126")
PYPI_LINUX_CUDA = "cu130"


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
    executable = nvidia_smi or _find_nvidia_smi()
    if executable is None:
        return GpuInfo(problem="nvidia-smi not found: no NVIDIA driver installed")
    try:
        listing = subprocess.run([executable, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30, **no_window())
        summary = subprocess.run([executable], capture_output=True, text=True, timeout=30, **no_window())
    except (OSError, subprocess.SubprocessError) as error:
        return GpuInfo(problem=f"nvidia-smi failed: {error}")
    if listing.returncode != 0:
        first = (listing.stdout + listing.stderr).strip().splitlines()
        return GpuInfo(problem=f"nvidia-smi failed: {first[0] if first else listing.returncode}")
    rows = [[c.strip() for c in line.split(",")] for line in listing.stdout.splitlines() if line.strip()]
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", summary.stdout)
    return GpuInfo(gpus=tuple(r[0] for r in rows), driver=rows[0][1] if rows and len(rows[0]) > 1 else None,
                   cuda=cuda[1] if cuda else None)


def _find_nvidia_smi() -> str | None:
    """``nvidia-smi`` on ``PATH``, or where the Windows driver puts it (not always on ``PATH`` there)."""
    executable = shutil.which("nvidia-smi")
    if executable is None and platform.system() == "Windows":
        fallback = Path(os.environ.get("SYSTEMROOT", r"C:\Windows")) / "System32" / "nvidia-smi.exe"
        executable = str(fallback) if fallback.is_file() else None
    return executable


def choose_variant(gpu: GpuInfo) -> str:
    """``"cuda"`` when an NVIDIA GPU with a driver a CUDA build supports is present, else ``"cpu"``."""
    return "cuda" if gpu.fitting_build and platform.system() != "Darwin" else "cpu"
