"""Child processes that end with their parent: a killed stage leaves no worker writing behind it."""

from __future__ import annotations

import os
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


def loader_worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of every DataLoader: end with the parent. (OpenCV's thread pool is left
    alone: changing it in a forked worker can deadlock on a lock the parent's pool held at fork.)"""
    die_with_parent()


def loader_workers(num_workers: int | None) -> int:
    """``data.num_workers`` resolved: None is one worker per core beyond the first, at most 4."""
    if num_workers is None:
        return max(0, min(4, (os.cpu_count() or 1) - 1))
    return num_workers
