"""`python scripts/bench.py [--quick] [--json F]`: runs `python -m benchmarks` (benchmarks/)."""

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
runpy.run_module("benchmarks", run_name="__main__", alter_sys=True)
