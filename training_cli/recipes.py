"""Training recipes: one readable TOML file per network, merged with the user's changes.

A recipe is plain data (the TOML tables ``[options]``, ``[train]``, ``[data]`` and one
``[[stages]]`` table per training stage of the network). The defaults in
``training_cli/configs/<model>.toml`` are each paper's recipe; a user copies one, edits it
and passes it with ``--config``, and flags such as ``--epochs`` or ``--set train.crop=256``
override single values. The merged recipe is stored in every checkpoint and model card, so
a result can always be traced back to the exact settings that made it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import tomllib

from core.errors import InputError
from core.models import registry

RECIPE_FOLDER = Path(__file__).with_name("configs")

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "poly", "constant")
AUGMENTATIONS = ("dihedral", "flips", "none")
NORMALISATIONS = ("preset", "dataset")
SELECT_METRICS = ("miou", "sek", "f_scd", "oa", "f1", "iou", "kappa")

#: Values every stage has unless its table says otherwise.
STAGE_DEFAULTS: dict[str, Any] = {
    "optimizer": "sgd", "momentum": 0.9, "nesterov": False, "weight_decay": 0.0,
    "schedule": "constant", "power": 1.0, "schedule_unit": "iteration", "warmup_epochs": 0,
}
TRAIN_DEFAULTS: dict[str, Any] = {
    "pretrained": "imagenet", "batch_size": 8, "crop": 256, "augment": "dihedral", "workers": 4,
    "seed": 0, "precision": "auto", "select": "miou", "val_batch_size": 0,
    "init_from": "none", "class_weights": "none",
}
#: ``train.class_weights`` words (or a list of one positive number per land-cover class).
CLASS_WEIGHT_CHOICES = ("none", "balanced")


def default_recipe_path(model: str) -> Path:
    return RECIPE_FOLDER / f"{model}.toml"


def load_recipe(model: str | None, config: Path | None) -> dict[str, Any]:
    """The recipe file of ``config`` or, without one, the paper's recipe of ``model``.

    Raises:
        InputError: No model and no file, an unreadable or invalid file, or a file for another model.
    """
    if config is None:
        if model is None:
            raise InputError("give --model NAME (the paper's recipe) or --config FILE (your own recipe)")
        try:
            registry.get_spec(model)
        except ValueError as error:
            raise InputError(str(error)) from None
        config = default_recipe_path(model)
    try:
        recipe = tomllib.loads(Path(config).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"recipe file {config} not found; check --config") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read recipe file {config}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"recipe file {config} is not valid TOML: {error}") from None
    recipe.setdefault("model", model)
    if model is not None and recipe["model"] != model:
        raise InputError(f"recipe file {config} is for model {recipe['model']!r}, not {model!r}; "
                         "leave out --model or choose a recipe for it")
    return recipe


def apply_overrides(recipe: Mapping[str, Any], flags: Mapping[str, Any], assignments: Iterable[str]) -> dict[str, Any]:
    """The recipe with the command line's changes, completed with defaults and checked.

    ``flags`` are the convenience options: ``epochs`` (every stage), ``lr`` (the first stage;
    later stages keep their ratio to it), ``batch_size``, ``crop``, ``workers``, ``seed``,
    ``pretrained``, ``init_from``, ``class_weights`` (``None`` leaves a value alone).
    ``assignments`` are ``KEY=VALUE`` items with a dotted key (``train.crop=256``,
    ``stages.2.lr=0.001``, ``options.clusters=4``, stage numbers from 1) and a TOML value (a bare
    word is taken as text).
    """
    merged = copy.deepcopy(dict(recipe))
    merged.setdefault("options", {})
    merged["train"] = {**TRAIN_DEFAULTS, **merged.get("train", {})}
    merged.setdefault("data", {}).setdefault("normalisation", "preset")
    stages = merged.get("stages") or [{}]
    merged["stages"] = [{**STAGE_DEFAULTS, **stage} for stage in stages]
    if flags.get("epochs") is not None:
        for stage in merged["stages"]:
            stage["epochs"] = int(flags["epochs"])
    if flags.get("lr") is not None:
        first = float(merged["stages"][0].get("lr", flags["lr"]))
        for stage in merged["stages"]:
            stage["lr"] = float(flags["lr"]) * float(stage.get("lr", first)) / first
    for key in ("batch_size", "crop", "workers", "seed", "pretrained", "init_from", "class_weights"):
        if flags.get(key) is not None:
            merged["train"][key] = flags[key]
    for item in assignments:
        _assign(merged, item)
    check_recipe(merged)
    return merged


def check_recipe(recipe: Mapping[str, Any]) -> None:
    """Refuse a recipe that cannot train, naming the value at fault."""
    try:
        spec = registry.get_spec(str(recipe.get("model")))
    except ValueError as error:
        raise InputError(f"recipe: {error}") from None
    stages = recipe["stages"]
    wanted = len(spec.training.stages) if spec.training else 1
    if len(stages) != wanted:
        names = ", ".join(s.name for s in spec.training.stages) if spec.training else "train"
        raise InputError(f"recipe: {spec.name} trains in {wanted} stage(s) ({names}) but the recipe has "
                         f"{len(stages)} [[stages]] table(s)")
    train = recipe["train"]
    for key in ("batch_size", "crop"):
        if not isinstance(train[key], int) or train[key] < 1:
            raise InputError(f"recipe: train.{key} must be a positive whole number, got {train[key]!r}")
    if train["crop"] % 32:
        raise InputError(f"recipe: train.crop must be a multiple of 32 (the networks' output stride), "
                         f"got {train['crop']}")
    if not isinstance(train["workers"], int) or train["workers"] < 0:
        raise InputError(f"recipe: train.workers must be 0 or more, got {train['workers']!r}")
    _choice("train.augment", train["augment"], AUGMENTATIONS)
    weights = train["class_weights"]
    if isinstance(weights, list):
        if not weights or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in weights):
            raise InputError(f"recipe: train.class_weights must be positive numbers, one per land-cover class, "
                             f"got {weights!r}")
    else:
        _choice("train.class_weights", weights, CLASS_WEIGHT_CHOICES)
    if not isinstance(train["init_from"], str) or not train["init_from"]:
        raise InputError(f"recipe: train.init_from must be a model file or \"none\", got {train['init_from']!r}")
    _choice("train.select", train["select"], SELECT_METRICS)
    _choice("data.normalisation", recipe["data"]["normalisation"], NORMALISATIONS)
    resize = recipe["data"].get("resize")
    if resize is not None and (not isinstance(resize, int) or isinstance(resize, bool) or resize < 1):
        raise InputError(f"recipe: data.resize must be a positive whole number of pixels (e.g. 512), got {resize!r}")
    for number, stage in enumerate(stages, 1):
        where = f"stages.{number}"
        _choice(f"{where}.optimizer", stage["optimizer"], OPTIMIZERS)
        _choice(f"{where}.schedule", stage["schedule"], SCHEDULES)
        _choice(f"{where}.schedule_unit", stage["schedule_unit"], ("iteration", "epoch"))
        for key in ("epochs", "lr"):
            if key not in stage:
                raise InputError(f"recipe: {where} has no {key}")
        if not isinstance(stage["epochs"], int) or stage["epochs"] < 0:
            raise InputError(f"recipe: {where}.epochs must be 0 or more, got {stage['epochs']!r}")
        if not float(stage["lr"]) > 0:
            raise InputError(f"recipe: {where}.lr must be positive, got {stage['lr']!r}")
    try:
        json.dumps(recipe)
    except TypeError as error:
        raise InputError(f"recipe: values must be numbers, text, booleans, lists or tables: {error}") from None


def format_recipe(recipe: Mapping[str, Any]) -> str:
    """The merged recipe as TOML text that :func:`load_recipe` reads back (``--print-config``)."""
    lines = [f"model = {_toml(recipe['model'])}", ""]
    for table in ("options", "train", "data"):
        lines.append(f"[{table}]")
        lines += [f"{key} = {_toml(value)}" for key, value in recipe.get(table, {}).items()]
        lines.append("")
    for stage in recipe["stages"]:
        lines.append("[[stages]]")
        lines += [f"{key} = {_toml(value)}" for key, value in stage.items()]
        lines.append("")
    return "\n".join(lines)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if value is None:
        return '"none"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))


def _choice(where: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"recipe: {where} = {value!r} is not one of {', '.join(choices)}")


def _assign(recipe: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise InputError(f"--set needs SECTION.KEY=VALUE (e.g. train.crop=256 or stages.2.lr=0.001), got {item!r}")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    target: Any = recipe
    for part in parts[:-1]:
        if isinstance(target, list):
            if not part.isdigit() or not 1 <= int(part) <= len(target):
                raise InputError(f"--set {key}: stage number {part!r} must be 1..{len(target)}")
            target = target[int(part) - 1]
        elif part in target and isinstance(target[part], (dict, list)):
            target = target[part]
        elif part in ("options", "train", "data"):
            target = target.setdefault(part, {})
        else:
            raise InputError(f"--set {key}: the recipe has no section {part!r} (sections: options, train, data, "
                             "stages.N)")
    if isinstance(target, list):
        raise InputError(f"--set {key}: name a value inside a stage, e.g. stages.1.lr")
    target[parts[-1]] = value
