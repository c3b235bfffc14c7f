"""Atomic file writes: results appear under their final name complete or not at all.

A killed job therefore never leaves a half-written file that a resumed run would mistake for a
finished one; temporary files carry a ``.tmp-`` prefix and live in the destination folder so the final
``os.replace`` is a rename within one file system. They end in ``.tmp``, not in the final suffix, so a
scan such as ``folder.glob("*.png")`` (pathlib's ``*`` matches dot files) never lists one; writers pass
the file format explicitly instead of letting it be inferred from the name.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

TMP_PREFIX = ".tmp-"


def _file_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file under the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent, suffix=".tmp")
    os.fchmod(fd, FILE_MODE)  # mkstemp makes files private (0600); results are ordinary files
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """``np.savez_compressed`` into memory, then one atomic write (no pickled objects are stored)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def clean_stale_temps(folder: str | os.PathLike) -> int:
    """Remove temporary files a killed run left behind in ``folder``; return how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    stale = list(folder.glob(TMP_PREFIX + "*"))
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)
