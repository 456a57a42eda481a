"""Self-describing checkpoints that are safe to open.

A checkpoint is one file that holds the weights *and* the model card that says how
to use them (network, options, classes, normalisation, tile size). The plugin and
the CLI therefore need nothing but the file: no separate config, no guessing.

Layout (``torch.save`` of a plain dict, so ``torch.load(weights_only=True)`` reads it)::

    {
        "format": "scd-change-checkpoint",
        "format_version": 1,
        "card": "<JSON of ModelCard.to_dict()>",
        "state_dict": {name: CPU tensor, ...},
        "sha256": "<hex digest of the state dict, see state_dict_sha256>",
    }

Why it is built this way:

* **Never run code from a file.** Model files travel between people, and a pickle
  can run anything when loaded. Every load uses ``weights_only=True``; a file that
  needs more is refused with a message, never "retried unsafely".
* **Refuse early, say why.** Every way a file can be wrong (missing, damaged,
  foreign, malicious, newer, tampered, inconsistent) raises
  :class:`~core.errors.CheckpointError` whose message names the problem and what to
  do, because the plugin shows exactly that text to the user.
* **Weights and card are checked against each other** (keys and shapes) before
  loading, so "7 classes in the weights, 4 in the card" is reported as such rather
  than as a wall of ``load_state_dict`` output.
* **The card is JSON**, so it can be read without building a network
  (:func:`read_card`) and stays readable by other tools.
* **Writes are atomic** (temporary file in the same folder, then ``os.replace``),
  so an interrupted save never leaves a half-written file under the final name.
* **The backbone's ``pretrained`` option is stored as ``None``**: it only matters
  when a network starts training, and rebuilding from a checkpoint must never read
  another file or download anything.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import pickle
import pickletools
import re
import stat
import warnings
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, InputError
from ..files import atomic_write_with
from ..version import __version__
from . import registry
from .base import ChangeModel
from .card import FORMAT_VERSION, PRESETS, RGB_BANDS, ModelCard, Preset, get_preset

log = logging.getLogger(__name__)

#: Value of the payload's ``"format"`` key; anything else is not one of our checkpoints.
FORMAT_NAME = "scd-change-checkpoint"

PathLike = str | os.PathLike[str]

_INIT_HINT = (
    "Make a checkpoint of this tool with `python -m training_cli init --model NAME --preset PRESET --out FILE` "
    "(then train it), or use a checkpoint written by this tool"
)
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
#: Globals a plain tensor pickle legitimately refers to (used only to word messages).
_HARMLESS_GLOBALS = ("torch.", "collections.OrderedDict", "_codecs.encode", "builtins.set")
_MAX_NAMED = 5


# --- Public API ------------------------------------------------------------------------------


def save_checkpoint(path: PathLike, model: ChangeModel, card: ModelCard, *, half: bool = False) -> Path:
    """Write ``model``'s weights with ``card`` to one self-describing file.

    The file appears under its final name only once complete: it is written to a
    temporary name in the same folder and moved into place with ``os.replace``.

    Args:
        path: Destination file; its folder must exist. An existing file is replaced.
        model: The network whose ``state_dict`` is stored. When it was built by
            :func:`~core.models.registry.build_model`, its name and options are
            checked against the card so that the file cannot contradict itself.
        card: How to use the weights. A ``pretrained`` option is stored as ``None``.
        half: Store floating-point tensors as float16 (half the file). Loading converts them
            back to the network's float32, so such a file runs anywhere, the CPU included.

    Returns:
        The path written.

    Raises:
        ValueError: The card does not describe this model (a programming error).
        InputError: The destination cannot be written.
    """
    path = Path(path)
    card = _storable_card(card)
    _check_model_fits_card(model, card)
    state = {}
    for name, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"state dict entry {name!r} is a {type(value).__name__}, not a tensor")
        state[name] = value.detach().to("cpu")
        if half and state[name].is_floating_point():
            state[name] = state[name].to(torch.float16)
    try:
        card_json = json.dumps(card.to_dict())
    except TypeError as error:
        raise ValueError(f"the model card is not JSON-serialisable: {error}") from error
    payload = {
        "format": FORMAT_NAME,
        "format_version": card.format_version,
        "card": card_json,
        "state_dict": state,
        "sha256": state_dict_sha256(state),
    }
    _write_atomically(path, payload)
    return path


def write_payload(path: PathLike, payload: Mapping[str, Any]) -> Path:
    """Write any ``torch.save``-able dict atomically (complete under its name, or not there at all).

    Used for training checkpoints, which hold more than a model file (optimiser, random states).
    """
    path = Path(path)
    _write_atomically(path, dict(payload))
    return path


def read_card(path: PathLike) -> ModelCard:
    """Read the model card of a checkpoint without building its network.

    Cheap enough for a "model information" dialog: the file is memory-mapped and
    the weights are not checksummed (:func:`load_checkpoint` does that).

    Raises:
        CheckpointError: The file is missing, unreadable, foreign, refused for
            safety, newer than this software, or its card does not parse.
    """
    path = Path(path)
    payload = _read_payload(path, mmap=True)
    card, _ = _validate_payload(path, payload)
    return card


def load_checkpoint(path: PathLike, *, map_location: str | torch.device = "cpu") -> tuple[ChangeModel, ModelCard]:
    """Rebuild the network a checkpoint describes and load its weights.

    Tensors are read onto the CPU, checked and loaded, and only then is the model
    moved to ``map_location``, so a GPU never holds two copies of the weights.

    Args:
        path: A file written by :func:`save_checkpoint`.
        map_location: Device the returned model lives on.

    Returns:
        The model in eval mode and its card.

    Raises:
        CheckpointError: Any reason the file cannot be used; the message says which
            and what to do.
    """
    path = Path(path)
    payload = _read_payload(path, mmap=False)
    card, state = _validate_payload(path, payload)
    _verify_digest(path, payload, state)
    model = _build(path, card, without_weights=True)
    _load_weights(path, model, card, state)
    if any(tensor.is_meta for tensor in itertools.chain(model.parameters(), model.buffers())):
        # a tensor outside the state dict (a non-persistent buffer) got no storage: build it as usual
        model = _build(path, card)
        _load_weights(path, model, card, state)
    model.to(map_location)
    model.eval()
    return model, card


def make_card(
    model_name: str,
    preset: str | Preset,
    *,
    options: Mapping[str, Any] | None = None,
    tile_size: int | None = None,
    bands: Iterable[int] = (1, 2, 3),
    dataset: str = "untrained",
    metrics: Mapping[str, float] | None = None,
) -> ModelCard:
    """Describe a network configured for a dataset preset.

    The card records the network's full options (its defaults merged with
    ``options``), so the checkpoint rebuilds the same network even if defaults
    change in a later release.

    Args:
        model_name: Registry name of the network.
        preset: A preset name (``"second"``, ``"landsat-scd"``, ``"binary"``) or a
            :class:`~core.models.card.Preset`; gives classes and normalisation.
        options: Constructor options overriding the network's defaults. For
            semantic networks ``num_classes`` comes from the preset.
        tile_size: Inference tile size; defaults to the network's paper training
            crop (``ModelSpec.default_tile_size``), because the networks' global
            attention makes results depend on the tile size they were trained at.
        bands: 1-based input bands per date, in model order; as many as the preset
            has normalisation values.
        dataset: What the weights were trained on.
        metrics: Validation metrics by name.

    Returns:
        The card, stamped with the current UTC time and software version.

    Raises:
        InputError: Unknown model or preset, a preset for the other task, or
            options, bands or tile size that do not fit.
    """
    try:
        spec = registry.get_spec(model_name)
    except ValueError as error:
        raise InputError(str(error)) from None
    try:
        preset_obj = get_preset(preset) if isinstance(preset, str) else preset
    except ValueError as error:
        raise InputError(str(error)) from None
    if preset_obj.task != spec.task:
        raise InputError(_task_mismatch_message(model_name, spec.task, preset_obj))

    user_options = dict(options or {})
    merged = {**spec.default_options, **user_options}
    if "pretrained" in merged:
        merged["pretrained"] = None
    if "backbone" in merged and spec.backbones and merged["backbone"] not in spec.backbones:
        raise InputError(
            f"model {model_name!r} has no backbone {merged['backbone']!r}; choose one of {', '.join(spec.backbones)}"
        )

    bands = tuple(int(b) for b in bands)
    if any(b < 1 for b in bands):
        raise InputError(f"bands are numbered from 1, got {bands}")
    if len(bands) != len(preset_obj.mean_t1):
        raise InputError(
            f"preset {preset_obj.name!r} normalises {len(preset_obj.mean_t1)} bands, but {len(bands)} bands "
            f"were chosen ({bands}); choose {len(preset_obj.mean_t1)} bands"
        )
    if len(bands) != RGB_BANDS:  # the networks' default takes three; any other count is an option of theirs
        merged.setdefault("in_channels", len(bands))
    in_channels = merged.get("in_channels", len(bands))
    if in_channels != len(bands):
        raise InputError(f"option in_channels={in_channels} does not match the {len(bands)} bands chosen ({bands})")

    if spec.task == "semantic":
        wanted = len(preset_obj.classes)
        given = user_options.get("num_classes")
        if given is not None and given != wanted:
            raise InputError(
                f"option num_classes={given} contradicts preset {preset_obj.name!r}, which has {wanted} classes "
                f"({', '.join(c.name for c in preset_obj.classes)}); leave num_classes out"
            )
        merged["num_classes"] = wanted

    try:
        json.dumps(merged)
    except TypeError as error:
        raise InputError(f"model options must be numbers, strings, booleans or null: {error}") from None

    try:
        return ModelCard(
            model=model_name,
            options=merged,
            task=spec.task,
            classes=preset_obj.classes if spec.task == "semantic" else (),
            tile_size=int(tile_size) if tile_size is not None else spec.default_tile_size,
            bands_t1=bands,
            bands_t2=bands,
            mean_t1=preset_obj.mean_t1,
            std_t1=preset_obj.std_t1,
            mean_t2=preset_obj.mean_t2,
            std_t2=preset_obj.std_t2,
            dataset=dataset,
            metrics=dict(metrics or {}),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            software_version=__version__,
        )
    except ValueError as error:
        raise InputError(f"cannot describe model {model_name!r} with preset {preset_obj.name!r}: {error}") from None


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict: per key (sorted) its name, dtype, shape and raw bytes.

    Zip archives written by ``torch.save`` are not checksummed on read, so bytes
    damaged in transit load silently; this digest catches that, and edits made
    without this tool. Each field is length-prefixed so no two different state
    dicts hash the same bytes.
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous()
        header = f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}".encode()
        raw = tensor.reshape(-1).view(torch.uint8).numpy()
        digest.update(len(header).to_bytes(8, "little"))
        digest.update(header)
        digest.update(raw.nbytes.to_bytes(8, "little"))
        digest.update(raw.data)
    return digest.hexdigest()


# --- Writing ---------------------------------------------------------------------------------


def _storable_card(card: ModelCard) -> ModelCard:
    """The card as stored: ``pretrained`` cleared so rebuilding never reads or downloads."""
    if card.options.get("pretrained") is None:
        return card
    options = {**card.options, "pretrained": None}
    return ModelCard.from_dict({**card.to_dict(), "options": options})


def _comparable(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options as JSON would give them back, without ``pretrained``."""
    return json.loads(json.dumps({k: v for k, v in options.items() if k != "pretrained"}, default=str))


def _check_model_fits_card(model: ChangeModel, card: ModelCard) -> None:
    """Refuse to write a file whose card would rebuild a different network."""
    name = getattr(model, "model_name", None)
    if name is not None and name != card.model:
        raise ValueError(f"the card describes model {card.model!r} but the weights are from {name!r}")
    if getattr(model, "task", card.task) != card.task:
        raise ValueError(f"the card says task {card.task!r} but the model's task is {model.task!r}")
    if card.task == "semantic" and getattr(model, "num_classes", card.num_classes) != card.num_classes:
        raise ValueError(f"the card lists {card.num_classes} classes but the model has {model.num_classes}")
    built_with = getattr(model, "build_options", None)
    if name is None or built_with is None:
        return
    spec = registry.get_spec(name)
    expected = _comparable({**spec.default_options, **card.options})
    actual = _comparable(built_with)
    if expected != actual:
        keys = sorted(k for k in expected.keys() | actual.keys() if expected.get(k) != actual.get(k))
        details = ", ".join(f"{k}: card {expected.get(k)!r}, model {actual.get(k)!r}" for k in keys)
        raise ValueError(f"the card's options would not rebuild this model ({details})")


def _write_atomically(path: Path, payload: dict[str, Any]) -> None:
    folder = path.parent
    if not folder.is_dir():
        raise InputError(f"cannot write {path}: folder {folder} does not exist; create it first")
    try:
        atomic_write_with(path, lambda stream: torch.save(payload, stream), fsync=True)
    except OSError as error:
        raise InputError(f"cannot write {path}: {error.strerror or error}") from error
    except RuntimeError as error:  # torch's zip writer reports a full disk or a failed write this way
        raise InputError(f"cannot write {path}: {_summary(error)}") from error


# --- Reading ---------------------------------------------------------------------------------


def _read_payload(path: Path, *, mmap: bool) -> Any:
    """``torch.load`` with ``weights_only=True``, every failure turned into a clear refusal."""
    if not path.exists():
        raise CheckpointError(f"model file not found: {path}. Check the path. {_INIT_HINT}.")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a model file; choose the checkpoint file inside it")
    if not path.is_file():  # never opened: reading a pipe would wait for a writer for ever
        raise CheckpointError(f"{path} is {_special_file_kind(path)}, not a model file; choose the model file "
                              "(.pt) itself")
    try:
        with path.open("rb") as stream:
            head = stream.read(4)
    except OSError as error:
        raise CheckpointError(f"cannot read model file {path}: {error.strerror or error}") from None
    if not head:
        raise CheckpointError(f"model file {path} is empty (an interrupted download or copy?); get it again")
    kind = "zip" if head.startswith(_ZIP_MAGIC) else "pickle" if head[0] == _PICKLE_PROTO else "unknown"
    try:
        with warnings.catch_warnings():
            # Plain pickles of protocol > 2 make torch warn before it refuses them; the refusal is what matters.
            warnings.filterwarnings("ignore", message=r".*pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and kind == "zip")
    except pickle.UnpicklingError as error:
        raise CheckpointError(_refusal_message(path, kind, error)) from None
    except Exception as error:  # noqa: BLE001 - torch.load fails in arbitrary ways on arbitrary bytes
        raise CheckpointError(_unreadable_message(path, kind, error)) from None


def _special_file_kind(path: Path) -> str:
    """What a path that is neither a regular file nor a folder is, in words."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return "not a regular file"
    for test, kind in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def _refusal_message(path: Path, kind: str, error: Exception) -> str:
    if kind == "unknown":
        return _unreadable_message(path, kind, error)
    match = re.search(r"GLOBAL ([\w.]+)", str(error))
    names = [match.group(1)] if match else [n for n in _pickle_globals(path) if not n.startswith(_HARMLESS_GLOBALS)]
    if names:
        return (
            f"refused to load {path}: it holds Python objects ({', '.join(names[:_MAX_NAMED])}) whose loading "
            "could run code, and a model file may only hold tensors and plain data. Nothing from the file was run. "
            f"Only use model files from sources you trust. {_INIT_HINT}."
        )
    return (
        f"refused to load {path}: it is a Python pickle that the safe loader cannot read (it may hold objects "
        f"that run code when loaded). Nothing from the file was run. {_INIT_HINT}."
    )


def _unreadable_message(path: Path, kind: str, error: Exception) -> str:
    reason = _summary(error)
    foreign = _foreign_zip_entries(path) if kind == "zip" else None
    if foreign is not None:
        listed = ", ".join(foreign[:_MAX_NAMED]) + (", ..." if len(foreign) > _MAX_NAMED else "")
        return (
            f"{path} is a zip archive but not a PyTorch model file (it holds {listed or 'nothing'}); choose the "
            f"model file itself (a .pt written by this tool), or unpack the archive first. {_INIT_HINT}."
        )
    if kind == "zip":
        return (
            f"model file {path} is damaged or incomplete ({reason}). It was probably cut short by an interrupted "
            "download, copy or save; get or write it again."
        )
    if kind == "pickle":
        return f"model file {path} cannot be read ({reason}); it is damaged or not a PyTorch file. {_INIT_HINT}."
    return (
        f"{path} is not a PyTorch model file (its content is not a PyTorch archive; it may be another kind of "
        f"file, or damaged beyond recognition). {_INIT_HINT}."
    )


def _foreign_zip_entries(path: Path) -> list[str] | None:
    """The entries of a readable zip that is not a PyTorch archive (no ``data.pkl``); ``None`` otherwise."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None  # not even a readable zip: damaged
    if any(name.endswith("data.pkl") for name in names):
        return None
    return names


def _pickle_globals(path: Path, *, max_ops: int = 1_000_000) -> list[str]:
    """Names a pickle would import, found by reading its opcodes without running them.

    Used only to word a refusal; any parse problem just ends the scan.
    """
    names: list[str] = []
    strings: deque[str] = deque(maxlen=2)
    try:
        with path.open("rb") as stream:
            for count, (opcode, arg, _) in enumerate(pickletools.genops(stream)):
                if opcode.name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) == 2:
                    names.append(".".join(strings))
                elif isinstance(arg, str):
                    strings.append(arg)
                if count >= max_ops:
                    break
    except Exception:  # noqa: BLE001 - a damaged pickle simply yields fewer names
        pass
    return list(dict.fromkeys(names))


def _describe_foreign(payload: Any) -> str:
    if isinstance(payload, Mapping):
        keys = [str(k) for k in payload]
        if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
            count = f"{len(keys)} tensor{'s' if len(keys) != 1 else ''}"
            return f"a plain PyTorch state dict ({count}, e.g. {', '.join(keys[:3])})"
        return f"a dictionary with keys {', '.join(keys[:_MAX_NAMED])}{', ...' if len(keys) > _MAX_NAMED else ''}"
    return f"a {type(payload).__name__}"


def _validate_payload(path: Path, payload: Any) -> tuple[ModelCard, dict[str, torch.Tensor]]:
    """Check the envelope and parse the card; return the card and the state dict."""
    if not isinstance(payload, Mapping) or payload.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path} is not a checkpoint of this tool: it is {_describe_foreign(payload)}, without the model card "
            f"that says which network, classes and normalisation the weights need. {_INIT_HINT}; ImageNet ResNet "
            "weights can start a backbone through its --pretrained option."
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path} is damaged: its format version {version!r} is not a positive whole number")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer version of this software (checkpoint format {version}; this version "
            f"reads up to format {FORMAT_VERSION}). Update the plugin to use it."
        )
    card_text = payload.get("card")
    try:
        if not isinstance(card_text, str):
            raise TypeError(f"expected JSON text, found {type(card_text).__name__}")
        card_data = json.loads(card_text)
        if not isinstance(card_data, dict):
            raise TypeError(f"expected a JSON object, found {type(card_data).__name__}")
        card = ModelCard.from_dict(card_data)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise CheckpointError(
            f"the model card in {path} cannot be read ({error}). The file is damaged or was edited by hand; "
            "write it again with this tool."
        ) from None
    if card.format_version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has a model card of a newer format ({card.format_version}; this version reads up to "
            f"{FORMAT_VERSION}). Update the plugin to use it."
        )
    state = payload.get("state_dict")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is damaged: its weights are not a dictionary of tensors")
    return card, dict(state)


def _verify_digest(path: Path, payload: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> None:
    stored = payload.get("sha256")
    if not isinstance(stored, str):
        raise CheckpointError(f"{path} is damaged: it has no weights checksum. Write it again with this tool.")
    if state_dict_sha256(state) != stored:
        raise CheckpointError(
            f"the weights in {path} do not match the checksum written with them: the file was changed or damaged "
            "after it was saved. Do not use it; copy or download it again, or export it again from its source."
        )


def _build(path: Path, card: ModelCard, *, without_weights: bool = False) -> ChangeModel:
    """Rebuild the card's network with random weights, refusing anything inconsistent.

    ``without_weights`` builds it on PyTorch's meta device, whose tensors have shapes but no
    storage, for weights that :func:`_load_weights` assigns next: drawing random weights only
    to overwrite them took a third of a second for a ResNet-34 network, on every run. A
    network that cannot be built there is built as usual.
    """
    if without_weights:
        try:
            registry.get_spec(card.model)  # imported outside the meta device: module-level tensors stay real
            with torch.device("meta"):
                return _build(path, card)
        except CheckpointError:
            raise
        except Exception:  # noqa: BLE001 - some construction step needs real tensors: build it as usual
            log.debug("building %s on the meta device failed; building it with random weights", card.model)
    try:
        spec = registry.get_spec(card.model)
    except ValueError:
        raise CheckpointError(
            f"{path} is for a model named {card.model!r}, which this version does not know (known models: "
            f"{', '.join(registry.model_names())}). Update the plugin, or check the file comes from this tool."
        ) from None
    except ImportError as error:
        raise CheckpointError(
            f"model {card.model!r} cannot be used: its code failed to import ({error}). Reinstall the plugin."
        ) from error
    if spec.task != card.task:
        raise CheckpointError(
            f"{path} says {card.model!r} is a {card.task} model, but it is a {spec.task} model; the card is wrong"
        )
    options = dict(card.options)
    if options.get("pretrained") is not None:
        options["pretrained"] = None  # a checkpoint never makes us read another file or download
    try:
        model = registry.build_model(card.model, **options)
    except (ValueError, TypeError, KeyError, RuntimeError, AssertionError) as error:
        raise CheckpointError(
            f"the options stored in {path} do not build a {card.model} network ({error}). The file was written "
            "by an incompatible version or edited by hand."
        ) from None
    if card.task == "semantic" and getattr(model, "num_classes", card.num_classes) != card.num_classes:
        raise CheckpointError(
            f"{path} lists {card.num_classes} classes but its options build a {card.model} with "
            f"{model.num_classes} classes; the card contradicts itself"
        )
    return model


def _load_weights(path: Path, model: ChangeModel, card: ModelCard, state: Mapping[str, torch.Tensor]) -> None:
    """Compare names and shapes first, so a mismatch is explained rather than dumped."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    different = [
        (k, tuple(state[k].shape), tuple(expected[k].shape))
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or different:
        raise CheckpointError(_mismatch_message(path, card, len(expected), missing, unexpected, different))
    if not any(tensor.is_meta for tensor in expected.values()):
        model.load_state_dict(state, strict=True)
        return
    # built without weights (see _build): the file's tensors become the network's, in its dtypes
    model.load_state_dict({name: tensor.to(expected[name].dtype) for name, tensor in state.items()}, strict=True,
                          assign=True)


def _mismatch_message(
    path: Path,
    card: ModelCard,
    total: int,
    missing: list[str],
    unexpected: list[str],
    different: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
) -> str:
    described = ", ".join(f"{k}={v}" for k, v in card.options.items() if k != "pretrained")
    parts = [f"the weights in {path} do not fit the {card.model} network its card describes ({described})"]
    classes = _weights_class_count(card, different)
    if classes is not None:
        parts.append(f"the weights are for {classes} semantic classes but the card says {card.num_classes}")
    if missing:
        note = " (most of the network is absent: the weights are probably for another network)" if (
            len(missing) > total // 2
        ) else ""
        parts.append(f"{len(missing)} tensors missing{note}, e.g. {', '.join(missing[:_MAX_NAMED])}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensors, e.g. {', '.join(unexpected[:_MAX_NAMED])}")
    if different:
        shown = "; ".join(f"{k}: file {list(a)} vs model {list(b)}" for k, a, b in different[:_MAX_NAMED])
        parts.append(f"{len(different)} tensors of another shape: {shown}")
    parts.append("the card and the weights disagree, so the file was put together wrongly or edited; "
                 "write it again with this tool")
    return "; ".join(parts) + "."


def _weights_class_count(card: ModelCard, different: list[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> int | None:
    """The class count the weights were made for, when every shape difference says the same."""
    if card.task != "semantic" or not different:
        return None
    found: set[int] = set()
    for _, got, want in different:
        if len(got) != len(want):
            return None
        dims = [i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
        if len(dims) != 1:
            return None
        g, w = got[dims[0]], want[dims[0]]
        if w == card.num_classes + 1:
            found.add(g - 1)
        elif w == card.num_classes:
            found.add(g)
        else:
            return None
    return found.pop() if len(found) == 1 else None


def _summary(error: BaseException) -> str:
    """The first sentence of an error: torch's messages go on with advice that does not apply here."""
    text = str(error).strip()
    return text.splitlines()[0].split(". ", 1)[0][:160] if text else type(error).__name__


def _task_mismatch_message(model_name: str, task: str, preset: Preset) -> str:
    fitting = [name for name, p in PRESETS.items() if p.task == task]
    return (
        f"preset {preset.name!r} is for {preset.task} change detection, but {model_name!r} is a {task} network; "
        f"use {' or '.join(repr(n) for n in fitting) or 'a preset of that task'}"
    )
