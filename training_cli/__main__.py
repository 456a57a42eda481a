"""Entry point of ``python -m training_cli`` (run from the repository root)."""

import sys

from training_cli.cli import main

sys.exit(main())
