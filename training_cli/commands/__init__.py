"""One module per sub-command of ``python -m training_cli``.

Each module exposes ``NAME`` (the sub-command), ``add_parser(subparsers)`` (declares
its arguments, help and examples) and ``run(args) -> int`` (does the work and
returns the exit code). Adding a command is adding a module here and listing it in
:data:`COMMANDS`; the dispatcher in :mod:`training_cli.cli` needs no change.
"""

from __future__ import annotations

from types import ModuleType

from . import evaluate, export, init, models, predict, prepare, synthetic, train

#: Sub-command modules in the order ``--help`` lists them.
COMMANDS: tuple[ModuleType, ...] = (models, init, train, export, synthetic, prepare, evaluate, predict)
