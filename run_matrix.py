#!/usr/bin/env python
"""Compare base prompting, full fine-tuning, LoRA and QLoRA on your tasks: `python run_matrix.py --help`."""

import sys

from harness.cli import main

if __name__ == "__main__":
    sys.exit(main())
