"""``python -m semantic_change.plugin.installer ...`` (``python -m plugin.installer ...`` in a source checkout)."""

import sys

from .cli import main

sys.exit(main())
