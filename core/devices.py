"""Which device and numeric precision a run uses, and why.

"GPU detected but not used" is the most common complaint about peer tools, so the
choice is explicit and always explained: ``auto`` tries CUDA, then Apple MPS, then
the CPU, and the reason for every fall-back ends up in the run's log.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import InputError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    reason: str


def select_device(requested: str = "auto") -> DeviceChoice:
    """Resolve ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` to a usable device."""
    requested = (requested or "auto").strip().lower()
    if requested == "auto":
        if torch.cuda.is_available():
            return DeviceChoice(torch.device("cuda"), f"auto: CUDA available ({torch.cuda.get_device_name(0)})")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return DeviceChoice(torch.device("mps"), "auto: Apple MPS available")
        return DeviceChoice(torch.device("cpu"), f"auto: no CUDA or MPS device found ({_cuda_absence_reason()})")
    if requested == "cpu":
        return DeviceChoice(torch.device("cpu"), "requested")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device '{requested}' was requested but CUDA is not usable: {_cuda_absence_reason()}; "
                             "choose 'auto' or 'cpu'")
        device = torch.device(requested)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device '{requested}' does not exist: {torch.cuda.device_count()} CUDA device(s) found")
        return DeviceChoice(device, f"requested ({torch.cuda.get_device_name(device)})")
    if requested == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError("device 'mps' was requested but Apple MPS is not available; choose 'auto' or 'cpu'")
        return DeviceChoice(torch.device("mps"), "requested")
    raise InputError(f"unknown device '{requested}'; choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")


def _cuda_absence_reason() -> str:
    if torch.version.cuda is None:
        return "this PyTorch build has no CUDA support"
    return f"PyTorch built for CUDA {torch.version.cuda} but no usable NVIDIA GPU or driver was found"


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX or AVX-512 BF16, where bf16 autocast is much faster than fp32."""
    flags = _cpu_flags()
    return bool({"amx_bf16", "avx512_bf16"} & flags)


def cpu_has_fast_int8() -> bool:
    """True on CPUs with int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI, AMX), where int8
    convolutions run about twice as fast as fp32 ones."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & _cpu_flags())


def _cpu_flags() -> set[str]:
    if platform.system() != "Linux":
        return set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def select_precision(device: torch.device, requested: str = "auto") -> tuple[torch.dtype | None, str]:
    """Autocast dtype (None for plain fp32) and the reason for it."""
    requested = (requested or "auto").lower()
    if requested not in PRECISION_CHOICES:
        raise InputError(f"unknown precision '{requested}'; choose one of {', '.join(PRECISION_CHOICES)}")
    if requested == "fp32":
        return None, "fp32 requested"
    if requested == "bf16":
        return torch.bfloat16, "bf16 requested"
    if requested == "fp16":
        if device.type == "cpu":
            raise InputError("fp16 is not supported on the CPU; choose 'bf16', 'fp32' or 'auto'")
        return torch.float16, "fp16 requested"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "auto: bf16 autocast on a GPU that supports it"
        return torch.float16, "auto: fp16 autocast on CUDA"
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16, "auto: bf16 autocast (CPU has AMX or AVX-512 BF16)"
    return None, f"auto: fp32 ({device.type} without fast reduced precision)"


@contextlib.contextmanager
def inference_context(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """``inference_mode`` plus autocast when a reduced precision was chosen."""
    with torch.inference_mode():
        if dtype is None:
            yield
        else:
            with torch.autocast(device_type=device.type, dtype=dtype):
                yield
