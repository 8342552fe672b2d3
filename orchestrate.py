#!/usr/bin/env python3
"""loadgrid's entry point from a checkout: `python orchestrate.py --config config.yaml [--dry-run]` is
`loadgrid --config config.yaml [--dry-run]` (same commands, same help, which names itself loadgrid)."""

import sys

from loadgrid.cli import main

if __name__ == "__main__":
    sys.exit(main())
