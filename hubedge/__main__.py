"""``python -m hubedge …`` is ``hubedge …``."""

import sys

from hubedge.cli import main

sys.exit(main())
