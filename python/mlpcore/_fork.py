"""Fork safety: a child forked from a process that ran OpenMP kernels computes on one thread.

libgomp's worker threads do not survive fork(); its next parallel region in the child would wait
for them forever (multiprocessing's "fork" start method, joblib and pre-fork servers all hit
this). The native module's pthread_atfork handler drops the child to one thread; this hook says
so once, when the parent had used more.
"""
import os
import warnings

from . import _core


def _warn_in_child() -> None:
    threads = _core._threads_before_fork()
    if threads > 1:
        warnings.warn(
            f"mlpcore: this process was forked from one using {threads} OpenMP threads, which "
            "cannot be used after fork; mlpcore runs on 1 thread here. Start workers with the "
            "'spawn' or 'forkserver' method (multiprocessing.get_context('spawn')) to use more.",
            RuntimeWarning, stacklevel=2)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_warn_in_child)
