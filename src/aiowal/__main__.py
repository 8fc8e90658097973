"""``python -m aiowal``: the same command line as the ``aiowal`` script."""

import sys

from aiowal.cli import main

sys.exit(main())
