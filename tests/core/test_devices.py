"""Device and precision choice: explicit, explained, never assuming CUDA."""

from __future__ import annotations

import pytest
import torch

from core.devices import inference_context, select_device, select_precision
from core.errors import InputError


def test_auto_always_finds_a_device_and_says_why() -> None:
    choice = select_device("auto")
    assert choice.device.type in ("cuda", "mps", "cpu")
    assert choice.reason.startswith("auto")


def test_cpu_on_request() -> None:
    assert select_device("cpu").device == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_request_without_cuda_explains_and_suggests_a_fallback() -> None:
    with pytest.raises(InputError, match="choose 'auto' or 'cpu'"):
        select_device("cuda")


def test_unknown_device_is_refused() -> None:
    with pytest.raises(InputError, match="unknown device"):
        select_device("tpu")


def test_precision_choices() -> None:
    cpu = torch.device("cpu")
    assert select_precision(cpu, "fp32")[0] is None
    assert select_precision(cpu, "bf16")[0] is torch.bfloat16
    with pytest.raises(InputError, match="fp16"):
        select_precision(cpu, "fp16")
    with pytest.raises(InputError, match="unknown precision"):
        select_precision(cpu, "int8")
    dtype, reason = select_precision(cpu, "auto")
    assert dtype in (None, torch.bfloat16) and reason.startswith("auto")


def test_inference_context_disables_gradients_and_applies_autocast() -> None:
    layer = torch.nn.Linear(4, 4)
    with inference_context(torch.device("cpu"), torch.bfloat16):
        out = layer(torch.ones(1, 4))
    assert out.dtype == torch.bfloat16 and not out.requires_grad
