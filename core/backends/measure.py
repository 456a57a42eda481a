"""Which installed CPU runtime is fastest for one network on this machine, measured once and remembered.

The ranking of ONNX Runtime and OpenVINO is not fixed: on one 2-core AVX-512 CPU, ONNX Runtime ran
GAPL-SCD faster and OpenVINO ran SSCFNet faster, and the order changed again when other work shared
the cores (docs/performance.md). Another CPU (AMX, fewer cores, another vendor) can rank them
differently still. So ``auto`` times the candidates on the first batches of the first long run of a
network at a tile and batch size (:mod:`.race`), keeps the fastest, and writes the result beside
the exported graphs; later runs read it. The record's key holds the network's export key,
the batch size, int8 and a signature of this CPU and thread count, so a cache folder shared between
machines, or QGIS given fewer threads, measures again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from pathlib import Path

import torch

from ..files import atomic_write_text
from .cache import private_folder

log = logging.getLogger(__name__)

#: A runtime replaces PyTorch only when it takes less than this share of PyTorch's time: the two
#: often differ by less than the timing's noise, and a runtime adds a second or so per run
#: (hashing, verifying and loading its graph), so near-ties stay with PyTorch.
RUNTIME_MARGIN = 0.9


def cpu_signature() -> str:
    """What the ranking depends on: the CPU model, its core count and the threads the runtimes get."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}|{os.cpu_count()} cpus|{torch.get_num_threads()} threads"


def record_path(folder: Path, export_key: str, batch_size: int, variant: str) -> Path:
    """Where the ranking of one network, tile, batch size and arithmetic (``variant``) on this CPU is kept."""
    digest = hashlib.sha256(cpu_signature().encode()).hexdigest()[:12]
    return folder / "choices" / f"{export_key}-b{batch_size}-{variant}-{digest}.json"


def remembered(path: Path, candidates: list[str]) -> tuple[str, dict[str, float]] | None:
    """The candidate measured fastest earlier, if the record is readable and ranked exactly ``candidates``."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        runtime, seconds = record["runtime"], {str(k): float(v) for k, v in record["seconds"].items()}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        log.info("backend choice record %s is unreadable (%s); measuring again", path, error)
        return None
    if runtime not in candidates or set(seconds) != set(candidates):
        return None  # a runtime was installed or removed since: measure the new set
    return runtime, seconds


def remember(path: Path, runtime: str, seconds: dict[str, float]) -> None:
    """Store the ranking; a cache folder that cannot be written only means measuring again next time."""
    try:
        private_folder(path.parent)
        atomic_write_text(path, json.dumps({"runtime": runtime, "seconds": seconds, "cpu": cpu_signature()},
                                           indent=1))
    except OSError as error:
        log.warning("could not store the backend choice in %s (%s); the next run measures again", path, error)


def describe(seconds: dict[str, float], batch_size: int) -> str:
    """``onnxruntime 655 ms, torch 700 ms per batch of 4``; a candidate that could not run is "failed"."""
    ranked = sorted(seconds.items(), key=lambda item: item[1])
    return ", ".join(f"{name} {value * 1000:.0f} ms" if value < float("inf") else f"{name} failed"
                     for name, value in ranked) + f" per batch of {batch_size}"
