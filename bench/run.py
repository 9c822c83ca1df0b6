"""Entry point: `.venv/bin/python bench/run.py [--quick] [--tune] [--peers] [--duration 15] ...`.

A thin shim so that the script works when run by path: it puts the repository root on
`sys.path` and hands over to `bench.main` (or, with `--peers`, to `bench.peerbench`, which
measures MLServer and MLflow in the same run).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--peers" in argv:
        from bench.peerbench import main as peers_main

        sys.exit(peers_main([a for a in argv if a != "--peers"]))
    from bench.main import main

    sys.exit(main())
