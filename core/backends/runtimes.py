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

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .export import INPUT_NAMES

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

        core = ov.Core()
        model = core.read_model(str(path))
        model.reshape({name: [batch_size, bands, size, size] for name in INPUT_NAMES})
        config: dict[str, Any] = {
            "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": "LATENCY",
            # OpenVINO keeps its compiled kernels here, keyed by model and settings: the next run
            # of the same graph skips most of the compile (several seconds for these networks)
            "CACHE_DIR": str(path.parent / "openvino"),
        }
        self.compiled = core.compile_model(model, "CPU", config)
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
