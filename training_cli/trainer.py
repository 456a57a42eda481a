"""The trainer: one loop for every network, driven by the network's training contract and a recipe.

Nothing here knows a particular network. The model spec's :class:`~core.models.base.TrainingSpec`
says which loss, which stages (each with its parameter groups and frozen modules) and which
gradient step; the recipe says optimiser, schedule, epochs, batch and crop per stage.

What a run guarantees:

* **Exact resume.** ``last.pt`` (every epoch, and on Ctrl-C mid-epoch) holds model, optimiser,
  scheduler, gradient scaler, stage, epoch, step, every random state and the best score. Items are
  seeded by (seed, epoch, index) and the sampler by (seed, epoch), so a resumed CPU run ends with
  bitwise the weights of an uninterrupted one.
* **Files are complete or absent.** ``last.pt`` and ``best.pt`` are written atomically. Each is a model
  file (``core.models.checkpoint``: card, weights, checksum) that ``evaluate``, ``predict`` and the plugin
  read as it is, with the training state in an extra ``training_state`` entry; ``export`` writes the same
  card and weights without it (and optionally in float16).
* **Honest metrics.** Validation fills a confusion matrix; with several processes each scores its
  own share of the images (no padding, no repeats) and the matrices are summed, so the metrics are
  the ones a single process computes.
* **Several processes** (``torchrun``): DDP over a ``DistributedSampler``; only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import random
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from core import encode
from core.devices import select_device, select_precision
from core.errors import InputError
from core.models import registry
from core.models.base import (
    CHANGE_PROB,
    CHANGE_THRESHOLD,
    CLASS_WEIGHTS,
    SEM_LOGITS_T1,
    SEM_LOGITS_T2,
    VALID,
    plain_backward,
)
from core.models.card import ModelCard
from core.models.checkpoint import FORMAT_NAME, state_dict_sha256, write_payload

from .augment import SeededItems

STATE_FORMAT = "scd-training-state"
STATE_VERSION = 1
LAST = "last.pt"
BEST = "best.pt"
LOG_CSV = "log.csv"
EXIT_INTERRUPTED = 130
#: Item keys the trainer hands to a network's loss: the labels and the mask of labelled pixels.
TARGET_KEYS = ("change", "sem_t1", "sem_t2", VALID)


@dataclass
class TrainingData:
    """What the trainer trains on.

    Attributes:
        train: Training items (dicts as the datasets give them), not yet augmented.
        val: Validation items at full size.
        card: The card the model file will carry: classes, bands, normalisation, tile size.
        description: What the data is (root, format, counts), recorded in the card.
    """

    train: Dataset
    val: Dataset
    card: ModelCard
    description: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Processes:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def average(self, tensors: list[torch.Tensor]) -> None:
        """Average ``tensors`` in place over every process (one flat all-reduce per dtype)."""
        if not self.distributed or not tensors:
            return
        for dtype in {t.dtype for t in tensors}:
            group = [t for t in tensors if t.dtype == dtype]
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.all_reduce(flat)
            flat /= self.world
            offset = 0
            for t in group:
                t.copy_(flat[offset:offset + t.numel()].view_as(t))
                offset += t.numel()

    def sum_vector(self, vector: np.ndarray) -> np.ndarray:
        """Element-wise sum of a float64 vector (confusion counts) over every process."""
        if not self.distributed:
            return vector
        tensor = torch.from_numpy(np.ascontiguousarray(vector, dtype=np.float64))
        dist.all_reduce(tensor)
        return tensor.numpy()

    def share_buffers(self, model: nn.Module) -> None:
        """Give every process rank 0's buffers (batch-norm statistics), so all validate the saved network."""
        if self.distributed:
            for buffer in model.buffers():
                dist.broadcast(buffer, 0)

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on any (so all stop at the same step)."""
        if not self.distributed:
            return flag
        tensor = torch.tensor([int(flag)])
        dist.all_reduce(tensor)
        return bool(tensor.item())


#: The default: one process, nothing to share.
SINGLE_PROCESS = Processes()


def processes_from_environment() -> Processes:
    """Join the process group ``torchrun`` describes in the environment, or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return Processes(rank=rank, world=world, local_rank=local_rank)


@dataclass
class TrainResult:
    exit_code: int
    best_epoch: int | None
    best_metrics: dict[str, float]
    files: list[Path]
    history: list[dict[str, Any]]


# --- Building the network ----------------------------------------------------------------------


def build_network(recipe: Mapping[str, Any], card: ModelCard, *, start_from_pretrained: bool) -> tuple[nn.Module, str]:
    """The card's network, its backbone started as the recipe says; returns it and how it was started.

    ``train.pretrained`` is ``"imagenet"`` (torchvision's weights API: the local cache, else a
    download), a path to a local torchvision ``.pth`` file, or ``"none"``. When ImageNet weights
    cannot be fetched the network still builds, from random weights, with a warning, and the
    returned description says so (it goes into the model card).
    """
    source = recipe["train"].get("pretrained")
    options = dict(card.options)
    if not start_from_pretrained or source in (None, "", "none"):
        options["pretrained"] = None
        how = "random initialisation" if start_from_pretrained else "resumed"
        return registry.build_model(card.model, **options), how
    options["pretrained"] = str(source)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        try:
            model = registry.build_model(card.model, **options)
        except FileNotFoundError as error:
            raise InputError(f"{error}; check --pretrained (a torchvision .pth state dict)") from None
        except ValueError as error:
            raise InputError(f"cannot start the backbone from {source}: {error}") from None
    fallbacks = [w for w in caught if issubclass(w.category, RuntimeWarning) and "ImageNet" in str(w.message)]
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if fallbacks:
        return model, f"random initialisation (ImageNet weights unavailable: {fallbacks[0].message})"
    if str(source).lower() == "imagenet":
        return model, "ImageNet-1k (torchvision IMAGENET1K_V1)"
    return model, f"local weights file {Path(str(source)).name}"


def init_from_model(model: nn.Module, card: ModelCard, path: Path) -> dict[str, Any]:
    """Start ``model`` (built for ``card``) from the weights of the model file ``path`` (``train --init-from``).

    Every tensor of the same name and shape is copied. The first convolution of a model of another
    band count is carried over by :func:`core.models.backbones.adapt_input_weights` (the rule ImageNet
    weights get); every other tensor that does not fit, such as the heads of another legend, keeps its
    fresh initialisation. The file must hold the same network built with the same options (apart from
    its classes and bands), so that the copied weights mean what they meant there.

    Returns:
        What was done, for the log and the model card: ``file``, ``sha256`` (of the file's bytes, so the
        model started from can be identified later), ``model``, ``dataset``, ``classes``, ``bands``,
        ``copied`` (a count), ``adapted`` and ``new`` (tensor names) and a one-line ``description``.

    Raises:
        InputError: The file cannot be read, or holds another network or one built otherwise.
    """
    from core.errors import CheckpointError
    from core.models.backbones import adapt_input_weights
    from core.models.checkpoint import load_checkpoint

    try:
        source, source_card = load_checkpoint(path)
    except CheckpointError as error:
        raise InputError(f"--init-from: {error}") from None
    if source_card.model != card.model:
        raise InputError(f"--init-from: {path} holds a {source_card.model} network, but this run trains "
                         f"{card.model}; fine-tuning starts from the same network (--model {source_card.model})")
    free = ("num_classes", "in_channels", "pretrained")
    theirs = {k: v for k, v in source_card.options.items() if k not in free}
    ours = {k: v for k, v in card.options.items() if k not in free}
    spec_defaults = registry.get_spec(card.model).default_options
    theirs, ours = ({**{k: v for k, v in spec_defaults.items() if k not in free}, **o} for o in (theirs, ours))
    if theirs != ours:
        different = ", ".join(f"{k}: file {theirs.get(k)!r}, this run {ours.get(k)!r}"
                              for k in sorted(theirs.keys() | ours.keys()) if theirs.get(k) != ours.get(k))
        raise InputError(f"--init-from: {path} was built with other options ({different}); give this run the "
                         "same ones (--set options.NAME=VALUE) to fine-tune it")
    old_bands, new_bands = len(source_card.bands_t1), len(card.bands_t1)
    given = source.state_dict()
    state = model.state_dict()
    copied, adapted, new = [], [], []
    for name, tensor in state.items():
        old = given.get(name)
        if old is not None and old.shape == tensor.shape:
            tensor.copy_(old)
            copied.append(name)
        elif (old is not None and old_bands != new_bands and tensor.ndim == 4 and old.ndim == 4
              and (old.shape[1], tensor.shape[1]) == (old_bands, new_bands)
              and (old.shape[0], *old.shape[2:]) == (tensor.shape[0], *tensor.shape[2:])):
            tensor.copy_(adapt_input_weights(old, new_bands))
            adapted.append(name)
        else:
            new.append(name)
    if len(copied) < len(state) // 2:
        raise InputError(f"--init-from: only {len(copied)} of the {len(state)} tensors of {path} fit this network; "
                         "it is not a model to fine-tune from")
    parts = [f"{len(copied)} tensors copied"]
    if adapted:
        parts.append(f"first convolution adapted from {old_bands} to {new_bands} bands ({', '.join(adapted)})")
    if new:
        reason = (f"{source_card.num_classes} -> {card.num_classes} classes"
                  if source_card.num_classes != card.num_classes else "shapes differ")
        parts.append(f"{len(new)} started new ({reason}: {', '.join(new[:4])}{', ...' if len(new) > 4 else ''})")
    return {
        "file": path.name, "sha256": _file_sha256(path), "model": source_card.model,
        "dataset": source_card.dataset, "classes": list(source_card.class_names), "bands": old_bands,
        "copied": len(copied), "adapted": adapted, "new": new,
        "description": f"fine-tuned from {path.name} ({source_card.dataset}; {'; '.join(parts)})",
    }


#: ``balanced`` class weights are capped at this, so a class of a handful of pixels does not dominate the loss.
MAX_CLASS_WEIGHT = 10.0


def resolve_class_weights(setting: Any, data: TrainingData) -> torch.Tensor | None:
    """The recipe's ``train.class_weights`` as the ``[N + 1]`` tensor the semantic losses take (or ``None``).

    A list gives the weights of classes 1..N; ``"balanced"`` is median-frequency balancing over the training
    split's changed pixels of both dates (a class's weight is the median class frequency divided by its own,
    capped at :data:`MAX_CLASS_WEIGHT`; a class absent from the split weighs 1).

    Raises:
        InputError: Weights for a binary network, or a list of another length than the legend.
    """
    if setting in (None, "none"):
        return None
    card = data.card
    if card.task != "semantic":
        raise InputError(f"train.class_weights weights land-cover classes, but {card.model} is a binary network; "
                         "leave it out")
    if isinstance(setting, list):
        if len(setting) != card.num_classes:
            raise InputError(f"train.class_weights has {len(setting)} values but the legend has {card.num_classes} "
                             f"classes ({', '.join(card.class_names)}); give one weight per class, in that order")
        return torch.tensor([1.0, *map(float, setting)], dtype=torch.float32)
    counts = class_pixels(data.train, card.num_classes)[1:]
    present = counts > 0
    if not present.any():
        raise InputError("train.class_weights = \"balanced\": the training split has no changed pixel with a "
                         "land-cover label to count")
    frequency = counts / counts.sum()
    median = float(np.median(frequency[present]))
    weights = np.where(present, np.minimum(median / np.where(present, frequency, 1.0), MAX_CLASS_WEIGHT), 1.0)
    return torch.tensor([1.0, *weights.tolist()], dtype=torch.float32)


def class_pixels(dataset: Dataset, num_classes: int) -> np.ndarray:
    """Pixels of each class 0..N in the semantic labels of both dates (a dataset's own count when it has one)."""
    if hasattr(dataset, "class_pixels"):
        return np.asarray(dataset.class_pixels(), np.float64)
    counts = np.zeros(num_classes + 1, np.float64)
    for index in range(len(dataset)):  # type: ignore[arg-type]
        item = dataset[index]
        for key in ("sem_t1", "sem_t2"):
            labels = item[key].reshape(-1).long()
            if VALID in item:
                labels = labels[item[VALID].reshape(-1) > 0.5]
            counts += np.bincount(labels.numpy(), minlength=num_classes + 1)[:num_classes + 1]
    return counts


def _file_sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- Schedules -----------------------------------------------------------------------------------


def lr_factor(stage: Mapping[str, Any], step: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier after ``step`` optimiser steps of a stage (warm-up, then the schedule)."""
    total = max(1, int(stage["epochs"]) * steps_per_epoch)
    warmup = int(stage.get("warmup_epochs", 0)) * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    per_epoch = stage.get("schedule_unit") == "epoch"
    done = (step // steps_per_epoch) * steps_per_epoch if per_epoch else step
    progress = min(1.0, (done - warmup) / max(1, total - warmup))
    kind = stage["schedule"]
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "poly":
        return (1.0 - progress) ** float(stage.get("power", 1.0))
    return 1.0


def build_optimizer(model: nn.Module, groups: list[dict[str, Any]], stage: Mapping[str, Any]) -> torch.optim.Optimizer:
    """The stage's optimiser over the network's parameter groups (``lr_scale`` / ``weight_decay`` per group)."""
    lr = float(stage["lr"])
    decay = float(stage.get("weight_decay", 0.0))
    param_groups = []
    for group in groups:
        params = [p for p in group["params"] if p.requires_grad]
        if params:
            param_groups.append({
                "params": params, "name": group.get("name", "group"),
                "lr": lr * float(group.get("lr_scale", 1.0)),
                "weight_decay": float(group.get("weight_decay", decay)),
            })
    kind = stage["optimizer"]
    if kind == "adam":
        return torch.optim.Adam(param_groups, lr=lr)
    if kind == "adamw":
        return torch.optim.AdamW(param_groups, lr=lr)
    return torch.optim.SGD(param_groups, lr=lr, momentum=float(stage.get("momentum", 0.0)),
                           nesterov=bool(stage.get("nesterov", False)))


# --- Samplers ---------------------------------------------------------------------------------------


class _Skip(Sampler[int]):
    """The first ``skip`` indices of another sampler left out (resuming inside an epoch)."""

    def __init__(self, sampler: Sampler[int], skip: int) -> None:
        self.sampler = sampler
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.sampler)[self.skip:])

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)  # type: ignore[arg-type]


class _Shard(Sampler[int]):
    """Every ``world``-th index from ``rank``: each image scored once by exactly one process."""

    def __init__(self, length: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, length, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# --- Validation -----------------------------------------------------------------------------------


def new_confusion(task: str, num_classes: int) -> Any:
    """The confusion matrix of the task (SECOND protocol for semantic models, binary otherwise)."""
    from core.metrics import BinaryConfusion, SemanticConfusion

    return SemanticConfusion(num_classes) if task == "semantic" else BinaryConfusion()


def score_batch(confusion: Any, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor],
                task: str) -> None:
    """Decode outputs exactly as the engine does and add them to ``confusion``.

    Pixels an item marks invalid (``valid == 0``: no label there) are not counted.
    """
    from core.metrics import IGNORE_INDEX

    prob = outputs[CHANGE_PROB].float().cpu().numpy()[:, 0]
    threshold = outputs.get(CHANGE_THRESHOLD)
    threshold = threshold.float().cpu().numpy()[:, 0] if threshold is not None else None
    for i in range(prob.shape[0]):
        changed = encode.decode_change(prob[i], None if threshold is None else threshold[i])
        invalid = batch[VALID][i, 0].numpy() < 0.5 if VALID in batch else np.zeros(changed.shape, bool)
        if task == "semantic":
            for key, label in ((SEM_LOGITS_T1, "sem_t1"), (SEM_LOGITS_T2, "sem_t2")):
                classes = encode.decode_classes(outputs[key][i, 1:].float().cpu().numpy())
                target = np.where(invalid, IGNORE_INDEX, batch[label][i].numpy())
                confusion.update(encode.mask_classes(classes, changed).astype(np.int64), target)
        else:
            target = np.where(invalid, IGNORE_INDEX, batch["change"][i, 0].numpy().round().astype(np.int64))
            confusion.update(changed.astype(np.int64), target)


def validate(model: nn.Module, dataset: Dataset, *, task: str, num_classes: int, device: torch.device,
             dtype: torch.dtype | None, batch_size: int, processes: Processes = SINGLE_PROCESS,
             workers: int = 0) -> dict[str, float]:
    """Metrics of ``model`` on ``dataset``, summed over every process's share of the images."""
    confusion = new_confusion(task, num_classes)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=_Shard(len(dataset), processes.rank, processes.world),
                        num_workers=workers, pin_memory=device.type == "cuda", worker_init_fn=ignore_interrupts)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in loader:
            t1, t2, crop = _padded(batch["t1"], batch["t2"])
            t1, t2 = _to_device(t1, device), _to_device(t2, device)
            with _autocast(device, dtype):
                outputs = model(t1, t2)
            outputs = {k: v[..., :crop[0], :crop[1]] for k, v in outputs.items()}
            score_batch(confusion, outputs, batch, task)
    model.train(was_training)
    confusion.load_state_vector(processes.sum_vector(confusion.state_vector()))
    return {k: float(v) for k, v in confusion.compute().items() if isinstance(v, (int, float, np.floating, np.integer))}


def _padded(t1: torch.Tensor, t2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Both dates reflect-padded to multiples of 32 (the networks' stride); returns the original size."""
    height, width = t1.shape[-2:]
    pad_h, pad_w = -height % 32, -width % 32
    if pad_h or pad_w:
        t1 = nn.functional.pad(t1, (0, pad_w, 0, pad_h), mode="reflect")
        t2 = nn.functional.pad(t2, (0, pad_w, 0, pad_h), mode="reflect")
    return t1, t2, (height, width)


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return tensor.to(device, non_blocking=True, memory_format=torch.channels_last)
    return tensor.to(device)


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# --- Random states ------------------------------------------------------------------------------------


def capture_random_states(device: torch.device) -> dict[str, Any]:
    state = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": json.dumps(random.getstate()),
        "numpy": {"keys": torch.from_numpy(state[1].astype(np.int64)), "pos": int(state[2]),
                  "has_gauss": int(state[3]), "cached": float(state[4])},
    }
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_random_states(states: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    version, internal, gauss = json.loads(states["python"])
    random.setstate((version, tuple(internal), gauss))
    numpy = states["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached"]))
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


# --- Ctrl-C -------------------------------------------------------------------------------------------


class _StopRequest:
    """First Ctrl-C (or SIGTERM): finish the step, save ``last`` and stop. A second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        if threading_main():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step; saving the last checkpoint (Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)


def ignore_interrupts(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the main process, which saves ``last`` and stops them itself."""
    del worker_id
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# --- The trainer --------------------------------------------------------------------------------------


class Trainer:
    """Train one network on :class:`TrainingData` as a merged recipe says, writing into ``out_dir``.

    Args:
        recipe: A merged, checked recipe (:func:`training_cli.recipes.apply_overrides`).
        data: Training and validation items and the card of the model file.
        out_dir: Folder for ``last.pt``, ``best.pt``, ``log.csv`` and TensorBoard logs.
        device: ``auto``, ``cpu``, ``cuda[:N]`` or ``mps``; under torchrun each process takes its
            local GPU.
        resume: Continue from ``out_dir/last.pt``.
        processes: This process's rank among the training processes.
        progress: Show progress bars (rank 0 only).
        on_step: Called after every optimiser step with the global step and the network.
    """

    def __init__(self, recipe: Mapping[str, Any], data: TrainingData, out_dir: Path, *, device: str = "auto",
                 resume: bool = False, processes: Processes = SINGLE_PROCESS, progress: bool = True,
                 on_step: Callable[[int, nn.Module], None] | None = None) -> None:
        self.recipe = json.loads(json.dumps(recipe))
        self.data = data
        self.out_dir = Path(out_dir)
        self.processes = processes
        self.progress = progress and processes.is_main
        self.on_step = on_step
        self.resume = resume
        if processes.distributed and torch.cuda.is_available() and device in ("auto", "cuda"):
            device = f"cuda:{processes.local_rank}"
        self.device = select_device(device).device
        self.dtype, self.precision_reason = select_precision(self.device, self.recipe["train"]["precision"])
        self.spec = registry.get_spec(data.card.model)
        if self.spec.training is None:
            raise InputError(f"model {data.card.model!r} declares no training part; it cannot be trained")
        self.training = self.spec.training
        self.train_cfg = self.recipe["train"]
        self.history: list[dict[str, Any]] = []
        self.best_score = -math.inf
        self.best_epoch: int | None = None
        self.best_metrics: dict[str, float] = {}
        self.backbone_start = ""
        #: What ``train.init_from`` started the network from (:func:`init_from_model`), or ``None``.
        self.init_from: dict[str, Any] | None = None
        self.class_weights = resolve_class_weights(self.train_cfg.get("class_weights", "none"), data)

    # -- set-up

    def _initial_state(self) -> dict[str, Any] | None:
        path = self.out_dir / LAST
        if not self.resume:
            if self.processes.is_main and path.exists():
                raise InputError(f"{self.out_dir} already holds a training run ({LAST}); add --resume to continue "
                                 "it or choose another --out")
            return None
        if not path.exists():
            raise InputError(f"--resume: {path} does not exist; start without --resume")
        state = read_training_state(path)
        if state["recipe"].get("model") != self.recipe["model"]:
            raise InputError(f"--resume: {path} trains {state['recipe'].get('model')!r}, not {self.recipe['model']!r}")
        changed = _differences(state["recipe"], self.recipe)
        if changed:
            self._say(f"resuming with a changed recipe ({', '.join(changed)}); the run is no longer the one "
                      "that started")
        return state

    def _card(self, metrics: Mapping[str, float]) -> ModelCard:
        latest = self.history[-1]["epoch"] if self.history else None
        training = {
            "metrics_epoch": self.best_epoch if metrics is self.best_metrics else latest,
            "recipe": self.recipe,
            "data": self.data.description,
            "backbone_start": self.backbone_start,
            **({"init_from": {k: v for k, v in self.init_from.items() if k != "description"}}
               if self.init_from else {}),
            **({"class_weights": [round(float(w), 6) for w in self.class_weights[1:]]}
               if self.class_weights is not None else {}),
            "best_epoch": self.best_epoch,
            "epochs_done": len(self.history),
            "selected_by": self.train_cfg["select"],
            "processes": self.processes.world,
        }
        return dataclasses.replace(self.data.card, metrics=dict(metrics), training=training)

    # -- the loop

    def run(self) -> TrainResult:
        if self.processes.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        state = self._initial_state()
        seed = int(self.train_cfg["seed"])
        torch.manual_seed(seed)  # the same seed builds the same initial network
        random.seed(seed)
        np.random.seed(seed % (1 << 32))
        init_from = self.train_cfg.get("init_from", "none")
        if state is None and init_from not in (None, "", "none"):
            model = registry.build_model(self.data.card.model, **{**self.data.card.options, "pretrained": None})
            self.init_from = init_from_model(model, self.data.card, Path(str(init_from)))
            self.backbone_start = self.init_from["description"]
        else:
            model, self.backbone_start = build_network(self.recipe, self.data.card,
                                                       start_from_pretrained=state is None)
        if state is not None:
            model.load_state_dict(state["model"])
            progress = state["progress"]
            self.history = json.loads(state["history"])
            self.best_score = float(progress["best_score"])
            self.best_epoch = progress["best_epoch"]
            self.best_metrics = json.loads(progress["best_metrics"])
            self.backbone_start = progress["backbone_start"]
            self.init_from = json.loads(progress.get("init_from", "null"))
        else:
            progress = {"stage": 0, "epoch": 0, "step_in_epoch": 0, "global_step": 0, "global_epoch": 0}
        model.to(self.device)
        if self.device.type == "cuda":
            model.to(memory_format=torch.channels_last)
        train_items = SeededItems(self.data.train, seed=int(self.train_cfg["seed"]), augment=self.train_cfg["augment"])
        batch_size = int(self.train_cfg["batch_size"])
        sampler = DistributedSampler(train_items, num_replicas=self.processes.world, rank=self.processes.rank,
                                     shuffle=True, seed=int(self.train_cfg["seed"]), drop_last=True)
        steps_per_epoch = len(sampler) // batch_size
        if steps_per_epoch < 1:
            raise InputError(
                f"the training split has {len(train_items)} pairs, fewer than one batch of {batch_size} per process "
                f"({self.processes.world} process(es)); lower --batch-size or add data")
        writer = _tensorboard(self.out_dir) if self.processes.is_main else None
        self._say(f"training {self.data.card.model} on {self.device} ({self.precision_reason}); backbone: "
                  f"{self.backbone_start}; {len(train_items)} training / {len(self.data.val)} validation pairs; "
                  f"{self.processes.world} process(es)")
        files: list[Path] = []
        try:
            with _StopRequest() as stop:
                for stage_index in range(progress["stage"], len(self.training.stages)):
                    code = self._run_stage(model, stage_index, state if stage_index == progress["stage"] else None,
                                           progress, train_items, sampler, steps_per_epoch, stop, writer)
                    state = None
                    if code == EXIT_INTERRUPTED:
                        files = [self.out_dir / LAST]
                        self._say(f"interrupted; saved {self.out_dir / LAST}; continue with --resume")
                        return TrainResult(code, self.best_epoch, self.best_metrics, files, self.history)
                    progress.update(stage=stage_index + 1, epoch=0, step_in_epoch=0)
        finally:
            if writer is not None:
                writer.close()
        files = [self.out_dir / name for name in (BEST, LAST, LOG_CSV) if (self.out_dir / name).exists()]
        self._summary(files)
        return TrainResult(0, self.best_epoch, self.best_metrics, files, self.history)

    def _run_stage(self, model: nn.Module, stage_index: int, state: Mapping[str, Any] | None,
                   progress: dict[str, Any], train_items: SeededItems, sampler: DistributedSampler,
                   steps_per_epoch: int, stop: _StopRequest, writer: Any) -> int:
        stage = self.training.stages[stage_index]
        stage_cfg = self.recipe["stages"][stage_index]
        groups = stage.parameter_groups(model)
        trainable = {id(p) for group in groups for p in group["params"]}
        for p in model.parameters():
            p.requires_grad_(id(p) in trainable)
        frozen = list(stage.frozen_modules(model))
        optimizer = build_optimizer(model, groups, stage_cfg)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(stage_cfg, step, steps_per_epoch))
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            restore_random_states(state["rng"], self.device)
        plain = self.training.backward is plain_backward
        network: nn.Module = model
        if self.processes.distributed:
            network = DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        batch_size = int(self.train_cfg["batch_size"])
        epochs = int(stage_cfg["epochs"])
        for epoch in range(progress["epoch"], epochs):
            global_epoch = progress["global_epoch"]
            skip = progress["step_in_epoch"]
            train_items.set_epoch(global_epoch)
            sampler.set_epoch(global_epoch)
            loader = DataLoader(
                train_items, batch_size=batch_size, sampler=_Skip(sampler, skip * batch_size), drop_last=True,
                num_workers=int(self.train_cfg["workers"]), pin_memory=self.device.type == "cuda",
                generator=torch.Generator().manual_seed(int(self.train_cfg["seed"]) + global_epoch),
                worker_init_fn=ignore_interrupts, persistent_workers=False)
            model.train()
            for module in frozen:
                module.eval()
            sums: dict[str, float] = {}
            counted = 0
            wait = busy = 0.0
            bar = _bar(self.progress, steps_per_epoch, skip, f"{stage.name} epoch {epoch + 1}/{epochs}")
            tick = time.perf_counter()
            started = tick
            for step, batch in enumerate(loader, start=skip):
                got = time.perf_counter()
                wait += got - tick
                terms = self._step(network, model, batch, stage_index, optimizer, scheduler, scaler, plain)
                for key, value in terms.items():
                    sums[key] = sums.get(key, 0.0) + value
                counted += 1
                progress["global_step"] += 1
                progress["step_in_epoch"] = step + 1
                tick = time.perf_counter()
                busy += tick - got
                if bar is not None:
                    rate = batch_size * self.processes.world * counted / max(tick - started, 1e-9)
                    bar.set_postfix(loss=f"{terms['loss']:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                                    pairs_s=f"{rate:.1f}", refresh=False)
                    bar.update(1)
                if self.on_step is not None:
                    self.on_step(progress["global_step"], model)
                if self.processes.any(stop.requested) and progress["step_in_epoch"] < steps_per_epoch:
                    if bar is not None:
                        bar.close()
                    self._save(LAST, model, optimizer, scheduler, scaler, progress, stage_index, epoch)
                    return EXIT_INTERRUPTED
            if bar is not None:
                bar.close()
            self.processes.share_buffers(model)
            metrics = validate(model, self.data.val, task=self.data.card.task, num_classes=self.data.card.num_classes,
                               device=self.device, dtype=self.dtype,
                               batch_size=int(self.train_cfg.get("val_batch_size") or batch_size),
                               processes=self.processes, workers=int(self.train_cfg["workers"]))
            progress["global_epoch"] += 1
            progress["epoch"] = epoch + 1
            progress["step_in_epoch"] = 0
            row = {"epoch": progress["global_epoch"], "stage": stage.name,
                   "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - started, 3),
                   "train_seconds": round(wait + busy, 3),
                   "pairs_per_second": round(counted * batch_size * self.processes.world / max(wait + busy, 1e-9), 3),
                   "data_wait": round(wait / max(wait + busy, 1e-9), 4),
                   **{f"train_{k}": v / max(counted, 1) for k, v in sums.items()},
                   **{f"val_{k}": v for k, v in metrics.items()}}
            self.history.append(row)
            score = metrics.get(self.train_cfg["select"], -math.inf)
            improved = score > self.best_score
            if improved:
                self.best_score, self.best_epoch, self.best_metrics = score, progress["global_epoch"], metrics
            self._say(f"epoch {progress['global_epoch']} ({stage.name}): loss {row.get('train_loss', float('nan')):.4f}"
                      f", val {self.train_cfg['select']} {score:.4f}" + ("  (best so far)" if improved else ""))
            if self.processes.is_main:
                self._write_log()
                if writer is not None:
                    for key, value in row.items():
                        if isinstance(value, float):
                            writer.add_scalar(key.replace("_", "/", 1), value, progress["global_epoch"])
            if improved:
                self._save(BEST, model, optimizer, scheduler, scaler, progress, stage_index, epoch + 1)
            self._save(LAST, model, optimizer, scheduler, scaler, progress, stage_index, epoch + 1)
            if self.processes.any(stop.requested) and epoch + 1 < epochs:
                return EXIT_INTERRUPTED
        return 0

    def _step(self, network: nn.Module, model: nn.Module, batch: Mapping[str, Any], stage_index: int,
              optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler,
              plain: bool) -> dict[str, float]:
        t1 = _to_device(batch["t1"], self.device)
        t2 = _to_device(batch["t2"], self.device)
        # ``valid`` goes with the labels: every loss leaves the pixels without a label out of every term.
        targets = {k: batch[k].to(self.device, non_blocking=True) for k in TARGET_KEYS if k in batch}
        if self.class_weights is not None:
            targets[CLASS_WEIGHTS] = self.class_weights.to(self.device)
        sync = plain or not self.processes.distributed
        context = contextlib.nullcontext() if sync else network.no_sync()  # type: ignore[operator]
        optimizer.zero_grad(set_to_none=True)
        with context:
            with _autocast(self.device, self.dtype):
                outputs = network(t1, t2)
            terms = self.training.loss(outputs, targets, stage_index)
            if not torch.isfinite(terms["loss"].detach()):
                raise InputError(f"the training loss became {terms['loss'].item()} at step "
                                 f"{scheduler.last_epoch + 1}; lower the learning rate (--lr) or check the data")
            self.training.backward(model, terms, scaler.scale, self.processes.average)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        return {k: float(v.detach()) for k, v in terms.items() if v.ndim == 0}

    # -- files

    def _save(self, name: str, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
              scaler: torch.amp.GradScaler, progress: Mapping[str, Any], stage_index: int, epoch: int) -> None:
        if not self.processes.is_main:
            return
        # The card describes the weights in this file: best.pt's are the best epoch's, last.pt's the latest.
        metrics = self.best_metrics if name == BEST else self._latest_metrics()
        saved = {**progress, "stage": stage_index, "epoch": epoch, "best_score": self.best_score,
                 "best_epoch": self.best_epoch, "best_metrics": json.dumps(self.best_metrics),
                 "backbone_start": self.backbone_start, "init_from": json.dumps(self.init_from)}
        weights = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
        card = self._card(metrics)
        # A model file (evaluate, predict and the plugin read it as is) that also carries the training state.
        payload = {
            "format": FORMAT_NAME,
            "format_version": card.format_version,
            "card": json.dumps(card.to_dict()),
            "state_dict": weights,
            "sha256": state_dict_sha256(weights),
            "training_state": {
                "format": STATE_FORMAT,
                "format_version": STATE_VERSION,
                "recipe": self.recipe,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "progress": saved,
                "rng": capture_random_states(self.device),
                "history": json.dumps(self.history),
            },
        }
        write_payload(self.out_dir / name, payload)

    def _latest_metrics(self) -> dict[str, float]:
        if not self.history:
            return {}
        return {k[4:]: v for k, v in self.history[-1].items() if k.startswith("val_")}

    def _write_log(self) -> None:
        keys: list[str] = []
        for row in self.history:
            keys += [k for k in row if k not in keys]
        temporary = self.out_dir / f".{LOG_CSV}.tmp"
        with temporary.open("w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.history)
        os.replace(temporary, self.out_dir / LOG_CSV)

    def _say(self, text: str) -> None:
        if self.processes.is_main:
            print(text, file=sys.stderr, flush=True)

    def _summary(self, files: list[Path]) -> None:
        if not self.processes.is_main:
            return
        if self.best_epoch is None:
            self._say("finished without a validated epoch (0 epochs?)")
        else:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in self.best_metrics.items())
            self._say(f"best epoch {self.best_epoch} by validation {self.train_cfg['select']}: {shown}")
        for path in files:
            self._say(f"  wrote {path}")
        self._say(f"  make the QGIS model file with: python -m training_cli export --checkpoint "
                  f"{self.out_dir / BEST} --out model.pt")


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    """Dotted keys whose values differ between two recipes."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in sorted(old.keys() | new.keys())
                for d in _differences(old.get(key), new.get(key), f"{where}.{key}" if where else str(key))]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new, strict=True))
                for d in _differences(a, b, f"{where}.{i + 1}")]
    return [] if old == new else [f"{where}: {old!r} -> {new!r}"]


def read_training_state(path: Path) -> dict[str, Any]:
    """A ``last.pt`` / ``best.pt`` file, read safely (``weights_only``), or a clear refusal.

    Returns the training state with the file's ``card`` (JSON text) and ``model`` (the weights) added.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"training checkpoint {path} not found") from None
    except Exception as error:  # noqa: BLE001 - torch.load fails in arbitrary ways on arbitrary bytes
        raise InputError(f"cannot read training checkpoint {path}: {str(error).splitlines()[0][:200]}") from None
    state = payload.get("training_state") if isinstance(payload, dict) else None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise InputError(f"{path} is not a training checkpoint of this tool (the {LAST} or {BEST} of a "
                         "`train` run)")
    if state.get("format_version", 0) > STATE_VERSION:
        raise InputError(f"{path} was written by a newer version of this software; update it")
    return {**state, "card": payload["card"], "model": payload["state_dict"]}


def _bar(enabled: bool, total: int, initial: int, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="batch", dynamic_ncols=True, file=sys.stderr)


def _tensorboard(out_dir: Path) -> Any:
    """A TensorBoard writer when tensorboard is installed, else nothing."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(out_dir / "tensorboard"))
