"""The registered networks by name, title and task, without importing any of them (or torch).

The plugin builds its help texts from this table at load time, before it knows
whether torch is installed; :mod:`.registry` builds the networks. A contract test
checks that every entry matches its network's ``SPEC``, so the two cannot drift.
"""

from __future__ import annotations

#: Registry name -> (the network's own name for messages, its task).
NETWORKS: dict[str, tuple[str, str]] = {
    "gapl_scd": ("GAPL-SCD", "semantic"),
    "lsafnet": ("LSAFNet", "semantic"),
    "sscfnet": ("SSCFNet", "binary"),
    "cldrnet": ("CLDRNet", "binary"),
}


def title(name: str) -> str:
    """The network's own name, e.g. ``"GAPL-SCD"`` for ``gapl_scd``."""
    return NETWORKS[name][0] if name in NETWORKS else name


def titles_for_task(task: str) -> tuple[str, ...]:
    """Names of the registered networks of one task (``"semantic"`` or ``"binary"``)."""
    return tuple(shown for shown, network_task in NETWORKS.values() if network_task == task)


def describe_task(task: str) -> str:
    """E.g. ``"a semantic model (GAPL-SCD, LSAFNet)"``, for messages and help."""
    return f"a {task} model ({', '.join(titles_for_task(task))})"
