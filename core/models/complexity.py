"""Parameter and compute counts, the way the papers report them.

Compute is counted by running the network in eval mode on PyTorch's ``meta``
device under :class:`torch.utils.flop_counter.FlopCounterMode`: shapes propagate,
no arithmetic happens, so a 512 x 512 count costs milliseconds on any machine.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, size: int, *, channels: int = 3, batch: int = 1) -> int:
    """FLOPs (2 x multiply-accumulates) of one inference forward at ``size`` x ``size``.

    Divide by two for multiply-accumulates, the unit some papers call FLOPs. The count is of a
    forward after a first one: a network that derives tensors from its weights once and keeps
    them (SSCFNet's phase kernels) does not redo that work for every tile.
    """
    meta_model = copy.deepcopy(model).to("meta").eval()
    x = torch.empty(batch, channels, size, size, device="meta")
    counter = FlopCounterMode(display=False)
    with torch.no_grad():
        meta_model(x, x)
        with counter:
            meta_model(x, x)
    return int(counter.get_total_flops())
