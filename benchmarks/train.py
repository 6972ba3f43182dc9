"""Training benchmark: mlpcore vs NumPy, scikit-learn and PyTorch (same as `mlpcore bench`).

    PYTHONPATH=python python benchmarks/train.py --quick
    python benchmarks/train.py --workloads wide big --repeats 5

Writes benchmarks/results/train.json and train.png (see --out).
"""
import os
import sys

try:
    from mlpcore.bench.harness import main
except ImportError:  # a source checkout without PYTHONPATH=python
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    from mlpcore.bench.harness import main

if __name__ == "__main__":
    sys.exit(main())
