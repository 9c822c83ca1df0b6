"""Entry point: `.venv/bin/python bench/run.py [--quick] [--tune] [--duration 15] [--out ...]`.

A thin shim so that the script works when run by path: it puts the repository root on
`sys.path` and hands over to `bench.main`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.main import main

if __name__ == "__main__":
    sys.exit(main())
