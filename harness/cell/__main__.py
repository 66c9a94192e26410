"""``python -m harness.cell CELL_DIR``: run one cell (harness/cell/job.py)."""

import sys

from harness.cell.job import main

sys.exit(main())
