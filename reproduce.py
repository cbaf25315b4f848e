#!/usr/bin/env python
"""Reproduce a table of Kim (CVPR 2022), e.g. `python reproduce.py --table 1 --profile quick`."""

import sys

from benchmark.cli import main

if __name__ == "__main__":
    sys.exit(main())
