"""``python -m exporter …`` does what ``hubedge export …`` does."""

import sys

from exporter.cli import export_main

sys.exit(export_main())
