"""Build any network by name with keyword options.

Each network lives in its own sub-package of ``core.models`` and exposes a module
level ``SPEC`` (a :class:`~.base.ModelSpec`). Packages are imported on first use, so
listing or building one network never imports the others.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import ChangeModel, ModelSpec
from .names import describe_task, title, titles_for_task

__all__ = ["build_model", "describe_task", "get_spec", "model_names", "title", "titles_for_task"]

#: Registry name -> sub-package of ``core.models`` that defines ``SPEC``.
_PACKAGES: dict[str, str] = {
    "gapl_scd": "gapl_scd",
    "lsafnet": "lsafnet",
    "sscfnet": "sscfnet",
    "cldrnet": "cldrnet",
}


def model_names() -> tuple[str, ...]:
    return tuple(_PACKAGES)


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
