"""``python bench/experiments [options]``: see :mod:`experiments.main`."""

import sys
from pathlib import Path

# bench/ holds this package and bench_train (E3's timings); run as a folder, only this one is on the path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments.main import main

if __name__ == "__main__":
    main()
