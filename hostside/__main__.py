"""``python -m hostside``: the dfu-util-like CLI."""

import sys

from hostside.cli import main

sys.exit(main())
