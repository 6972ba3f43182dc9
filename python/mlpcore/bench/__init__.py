"""Training benchmark: mlpcore against NumPy, scikit-learn and PyTorch (``mlpcore bench``).

See :mod:`mlpcore.bench.harness`; every measurement runs in a child process
(:mod:`mlpcore.bench.contenders`).
"""
