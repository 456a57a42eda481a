"""Build any network by name with keyword options.

Each network lives in its own sub-package of ``core.models`` and exposes a module
level ``SPEC`` (a :class:`~.base.ModelSpec`). Packages are imported on first use, so
listing or building one network never imports the others.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import ChangeModel, ModelSpec

#: Registry name -> sub-package of ``core.models`` that defines ``SPEC``.
_PACKAGES: dict[str, str] = {
    "gapl_scd": "gapl_scd",
    "lsafnet": "lsafnet",
    "sscfnet": "sscfnet",
    "cldrnet": "cldrnet",
}


#: Registry name -> how the network is called in messages and help (its paper's name).
_TITLES: dict[str, str] = {
    "gapl_scd": "GAPL-SCD",
    "lsafnet": "LSAFNet",
    "sscfnet": "SSCFNet",
    "cldrnet": "CLDRNet",
}


def model_names() -> tuple[str, ...]:
    return tuple(_PACKAGES)


def title(name: str) -> str:
    """The network's own name for messages, e.g. ``"GAPL-SCD"`` for ``gapl_scd``."""
    return _TITLES.get(name, name)


def titles_for_task(task: str) -> tuple[str, ...]:
    """Names of the registered networks of one task (``"semantic"`` or ``"binary"``), for messages."""
    return tuple(title(name) for name in _PACKAGES if get_spec(name).task == task)


def describe_task(task: str) -> str:
    """E.g. ``"a semantic model (GAPL-SCD, LSAFNet)"``, built from the registry so it never goes stale."""
    return f"a {task} model ({', '.join(titles_for_task(task))})"


def get_spec(name: str) -> ModelSpec:
    """Return the spec of network ``name`` or explain which names exist."""
    if name not in _PACKAGES:
        raise ValueError(f"unknown model {name!r}; available models: {', '.join(_PACKAGES)}")
    module = importlib.import_module(f".{_PACKAGES[name]}", package=__package__)
    spec: ModelSpec = module.SPEC
    return spec


def build_model(name: str, **options: Any) -> ChangeModel:
    """Build network ``name``; ``options`` override the spec's defaults.

    The merged options are kept on the model as ``build_options`` so that a
    checkpoint can record exactly how to rebuild it.
    """
    spec = get_spec(name)
    merged = {**spec.default_options, **options}
    try:
        model = spec.model_class(**merged)
    except TypeError as error:
        raise ValueError(f"invalid options for model {name!r}: {error}") from error
    model.build_options = merged  # type: ignore[assignment]
    model.model_name = name  # type: ignore[assignment]
    return model  # type: ignore[return-value]
