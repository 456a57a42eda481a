"""How much memory the process holds and the machine has left, so a run that cannot fit is refused.

A run's peak is what the process already holds (Python, PyTorch's libraries, the
loaded network: typically several hundred MiB before the first pixel) plus what the
run adds (accumulators, tile batches, activations; see
:func:`core.engine.estimate_memory`). Measured against peak resident memory, counting
only the run's own share under-estimated the peak four- to five-fold, so the reported
estimate includes the process' current resident size. A run whose own share exceeds
the memory the operating system reports as available would end in the allocator (or
the kernel's OOM killer) after minutes of work; it is refused before it starts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import resource
import sys

from .errors import InputError


def process_rss_bytes() -> int:
    """Resident memory of this process now (Linux ``/proc``), or its peak so far elsewhere; 0 if unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (AttributeError, OSError):
        return 0
    return int(peak if sys.platform == "darwin" else peak * 1024)


def release_freed_memory() -> None:
    """Hand what Python and the runtimes freed back to the operating system, before the next step allocates.

    A runtime session, ONNX Runtime's quantiser or a finished check frees its memory into
    the C allocator, which keeps it: the process' resident size stays where the step left
    it (600 MB above the run's start after the int8 check of GAPL-SCD at 256 px), and the
    estimate, which starts from the resident size, can no longer tell what the run adds.
    ``malloc_trim`` (glibc) returns the free pages; elsewhere this only collects garbage.
    """
    gc.collect()
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # another C library (musl) has no malloc_trim
        pass


def available_memory_bytes() -> int | None:
    """Memory the OS can give this process without swapping (``MemAvailable``), or ``None`` if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def refuse_if_short(run_bytes: int, device_type: str, tile_size: int, batch_size: int) -> None:
    """Refuse a CPU run whose own memory would exceed what is available.

    On a GPU the activations live in device memory, which PyTorch reports on its own
    terms when it runs out; this check covers main memory only.

    Raises:
        InputError: Saying how much is needed and available and what to lower.
    """
    if device_type != "cpu":
        return
    available = available_memory_bytes()
    if available is None or run_bytes <= available:
        return
    raise InputError(
        f"this run needs about {describe(run_bytes)} of memory but only {describe(available)} is available; "
        f"lower the batch size (now {batch_size}) or the tile size (now {tile_size} px; the model's own tile "
        "size is usually best), or close other programs")


def describe(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:.0f} MiB" if num_bytes < 2**30 else f"{num_bytes / 2**30:.1f} GiB"
