"""Child processes that end with their parent: a killed stage leaves no worker writing behind it."""

from __future__ import annotations

import signal


def die_with_parent() -> None:
    """In a child process (pool worker initializer, ``preexec_fn``): ask Linux to SIGKILL this process
    when its parent dies. Elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def pool_worker_init() -> None:
    """Initializer of pool workers: end with the parent, and one torch thread each (a worker per core;
    torch's own threads would oversubscribe them)."""
    import torch

    die_with_parent()
    torch.set_num_threads(1)
