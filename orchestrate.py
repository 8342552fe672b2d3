#!/usr/bin/env python3
"""loadgrid's entry point: `python orchestrate.py --config config.yaml [--dry-run]`."""

import sys

from loadgrid.cli import main

if __name__ == "__main__":
    sys.exit(main())
