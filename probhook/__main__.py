"""``python -m probhook``: the command-line interface."""

import sys

from probhook.cli import main

sys.exit(main())
