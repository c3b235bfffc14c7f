"""The PASCAL VOC colour palette and palette-PNG mask I/O (index 255 = ignore, drawn white)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.errors import DataError
from wsss.io import atomic_path

IGNORE_INDEX = 255


def voc_palette(n: int = 256) -> np.ndarray:
    """The VOC colour map as uint8 [n, 3] (bit-interleaved, as in the devkit's ``labelcolormap``)."""
    pal = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    pal[IGNORE_INDEX] = (255, 255, 255)
    return pal


PALETTE = voc_palette()


def colorize(mask: np.ndarray) -> np.ndarray:
    """Index mask uint8 [H, W] -> RGB uint8 [H, W, 3] in the VOC palette."""
    return PALETTE[mask]


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write an index mask uint8 [H, W] as a VOC-palette PNG, atomically."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask for {path} must be 2-D [H, W], got shape {mask.shape}")
    if mask.dtype != np.uint8:
        if mask.min() < 0 or mask.max() > 255:
            raise ValueError(f"mask for {path} has values outside 0..255")
        mask = mask.astype(np.uint8)
    img = Image.fromarray(mask, mode="P")
    img.putpalette(PALETTE.reshape(-1).tolist())
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def read_mask(path: str | os.PathLike, num_classes: int | None = None) -> np.ndarray:
    """Read a palette or single-channel index PNG as uint8 [H, W].

    With ``num_classes``, a value that is neither a class index (< num_classes) nor 255 raises a
    :class:`DataError` naming the file and the value (RGB-coloured masks are the usual cause).
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L", "I", "I;16"):
                raise DataError(
                    f"{path}: mask PNG has mode {img.mode}; expected a palette ('P') or grey-level ('L') "
                    "index image where each pixel value is a class index (255 = ignore). Convert RGB-coloured "
                    "masks to index masks first."
                )
            mask = np.array(img)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot read mask ({exc})") from exc
    if mask.dtype != np.uint8:
        if mask.max() > 255:
            raise DataError(f"{path}: mask value {int(mask.max())} does not fit the 0..255 index range")
        mask = mask.astype(np.uint8)
    if num_classes is not None:
        bad = (mask >= num_classes) & (mask != IGNORE_INDEX)
        if bad.any():
            value = int(mask[bad][0])
            raise DataError(
                f"{path}: mask value {value} is not a class index (0..{num_classes - 1}) nor 255 (ignore)"
            )
    return mask


def mask_file_ok(path: Path) -> bool:
    """Whether ``path`` is a complete, readable mask PNG (an outputs check: a file that is not is redone)."""
    try:
        read_mask(path)
    except DataError:
        return False
    return True
