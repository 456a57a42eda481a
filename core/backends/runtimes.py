"""Sessions of the optional CPU runtimes, wrapped as the model contract's callable.

Both runtimes get as many threads as PyTorch was given (``torch.get_num_threads``),
so a caller that limits PyTorch (the tests, QGIS leaving a core for rendering)
limits them too. OpenVINO is told its precision: left alone it picks bf16 by itself
on CPUs with AMX, so the run's precision (fp32, or bf16 where the engine would
autocast PyTorch to bf16) is always the engine's choice, made once for every backend. OpenVINO compiles for one
static batch size (dynamic shapes cost speed on CPU), so a shorter last batch is
padded with zeros and the padding cut from the outputs.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..files import atomic_write_text
from .cache import file_sha256, private_folder, recorded_sha256
from .export import INPUT_NAMES

log = logging.getLogger(__name__)

RUNTIMES = ("onnxruntime", "openvino")


def runtime_available(name: str) -> bool:
    """True when the runtime's Python package is installed (it is not imported here)."""
    module = {"onnxruntime": "onnxruntime", "openvino": "openvino"}[name]
    return importlib.util.find_spec(module) is not None


def runtime_version(name: str) -> str:
    module = __import__(name)
    return str(getattr(module, "__version__", "?")).split("-")[0]


def _as_array(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


class OnnxRuntimeForward:
    """``(x1, x2) -> dict[str, Tensor]`` over an ONNX Runtime CPU session."""

    def __init__(self, path: Path, output_names: Sequence[str], threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # the memory pattern pre-plans one block per input shape for every intermediate tensor: for
        # GAPL-SCD (ResNet-50, 256 px, batch 4) it held 290 MiB more at its peak, at the same speed
        options.enable_mem_pattern = False
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.output_names = list(output_names)

    def __call__(self, x1: torch.Tensor | np.ndarray, x2: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        feeds = {INPUT_NAMES[0]: _as_array(x1), INPUT_NAMES[1]: _as_array(x2)}
        values = self.session.run(self.output_names, feeds)
        return {name: torch.from_numpy(value) for name, value in zip(self.output_names, values, strict=True)}


class OpenVinoForward:
    """``(x1, x2) -> dict[str, Tensor]`` over an OpenVINO CPU model compiled for one batch size."""

    def __init__(self, path: Path, output_names: Sequence[str], batch_size: int, bands: int, size: int,
                 threads: int | None = None, precision: str = "f32") -> None:
        import openvino as ov

        config: dict[str, Any] = {
            "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": "LATENCY",
            # OpenVINO keeps its compiled kernels here, keyed by model and settings: the next run
            # of the same graph skips most of the compile (several seconds for these networks)
            "CACHE_DIR": str(path.parent / "openvino"),
        }
        with _keeping_signal_stack():
            self.compiled = _compile_openvino(ov.Core(), path, [batch_size, bands, size, size], config)
            self.request = self.compiled.create_infer_request()
        self.output_names = list(output_names)
        self.batch_size = batch_size
        # a port may carry several tensor names (OpenVINO merges names of fused tensors): match by set
        ports = list(self.compiled.outputs)
        self._ports = {}
        for position, name in enumerate(self.output_names):
            matches = [port for port in ports if name in port.get_names()]
            self._ports[name] = matches[0] if matches else ports[position]

    def __call__(self, x1: torch.Tensor | np.ndarray, x2: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        a1, a2 = _as_array(x1), _as_array(x2)
        count = a1.shape[0]
        if count > self.batch_size:
            raise ValueError(f"OpenVINO was compiled for batches of {self.batch_size}, got {count} tiles")
        if count < self.batch_size:
            pad = ((0, self.batch_size - count), (0, 0), (0, 0), (0, 0))
            a1, a2 = np.pad(a1, pad), np.pad(a2, pad)
        results = self.request.infer({INPUT_NAMES[0]: a1, INPUT_NAMES[1]: a2})
        return {name: torch.from_numpy(np.array(results[port][:count])) for name, port in self._ports.items()}


class _SignalStack(ctypes.Structure):
    """Linux's ``stack_t``."""

    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextlib.contextmanager
def _keeping_signal_stack() -> Iterator[None]:
    """Put the thread's alternate signal stack back as it was once OpenVINO has compiled a model.

    OpenVINO (2026.4) installs an alternate signal stack on the thread that compiles a model, and
    when the model is freed it reinstalls the stack it found. Two models freed in the order they
    were made (a race, the int8 check) leave the first model's stack installed after it was
    unmapped, and the next signal Python handles on it (Ctrl-C in the training CLI or
    ``qgis_process``) is a segmentation fault. With the thread's own stack put back after each
    compile, every model finds, and later reinstalls, that one.
    """
    if not sys.platform.startswith("linux"):  # stack_t's layout differs elsewhere
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    saved = _SignalStack()
    if libc.sigaltstack(None, ctypes.byref(saved)) != 0:
        yield
        return
    try:
        yield
    finally:
        current = _SignalStack()
        libc.sigaltstack(None, ctypes.byref(current))
        if (current.ss_sp, current.ss_flags, current.ss_size) != (saved.ss_sp, saved.ss_flags, saved.ss_size):
            libc.sigaltstack(ctypes.byref(saved), None)


def _compile_openvino(core: Any, path: Path, shape: list[int], config: dict[str, Any]) -> Any:
    """``path`` compiled for inputs of ``shape``, through a static-shape copy OpenVINO can cache by its path.

    Compiled from a graph in memory, OpenVINO finds its cached kernels only after reading and
    reshaping the whole graph (1.3 s for SSCFNet's 292 MB graph); compiled from a file, it takes
    them straight from its cache (0.4 s), keyed by the file's path and the settings. So the
    reshaped graph is saved once as OpenVINO IR under a name made of the ONNX file's recorded
    SHA-256 and the shape: a given IR path only ever holds one graph, and a new ONNX file gets a
    new IR. OpenVINO does not check the IR's content when its cache has the compiled model, which
    was compiled from the IR when it was whole; when it compiles the IR afresh (a new cache file
    appears), the IR is checked against the digest recorded when it was written, and a damaged
    one is written again from the ONNX file.
    """
    source = recorded_sha256(path)
    if source is None:  # a file outside the cache: nothing to name a copy by
        return core.compile_model(_reshaped(core, path, shape), "CPU", config)
    folder = Path(config["CACHE_DIR"])
    ir = folder / f"{path.stem}-{source[:16]}-{'x'.join(map(str, shape))}.xml"
    record = ir.with_suffix(".sha256")
    if ir.exists() and ir.with_suffix(".bin").exists() and record.exists():
        before = set(folder.glob("*.blob"))
        try:
            compiled = core.compile_model(str(ir), "CPU", config)
        except RuntimeError as error:  # a damaged IR may not even compile
            log.info("OpenVINO could not compile %s (%s); writing it again", ir, str(error).splitlines()[-1:])
            compiled = None
        fresh = set(folder.glob("*.blob")) - before
        if compiled is not None and ((before and not fresh)
                                     or _ir_digest(ir) == record.read_text(encoding="utf-8").strip()):
            return compiled
        log.info("OpenVINO IR %s does not match its record; writing it again", ir)
        del compiled
        for stale in fresh:
            stale.unlink(missing_ok=True)
    private_folder(folder)
    temporary = ir.with_name(f"{ir.stem}.{os.getpid()}.tmp.xml")
    try:
        import openvino as ov

        ov.save_model(_reshaped(core, path, shape), str(temporary), compress_to_fp16=False)
        digest = _ir_digest(temporary)
        os.replace(temporary.with_suffix(".bin"), ir.with_suffix(".bin"))
        os.replace(temporary, ir)
        atomic_write_text(record, digest)
    finally:
        for leftover in (temporary, temporary.with_suffix(".bin")):
            leftover.unlink(missing_ok=True)
    return core.compile_model(str(ir), "CPU", config)


def _reshaped(core: Any, path: Path, shape: list[int]) -> Any:
    model = core.read_model(str(path))
    model.reshape({name: shape for name in INPUT_NAMES})
    return model


def _ir_digest(xml: Path) -> str:
    """SHA-256 of an IR's two files, the graph and its weights."""
    return file_sha256(xml) + file_sha256(xml.with_suffix(".bin"))
