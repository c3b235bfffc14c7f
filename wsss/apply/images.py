"""New images for ``wsss predict`` and ``wsss explain``: which files a folder, a glob or a file names,
how each is read as RGB (every conversion noted), and batches of images of one size."""

from __future__ import annotations

import glob
import logging
import os
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from wsss.errors import DataError

log = logging.getLogger("wsss")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
EXIF_ORIENTATION = 0x0112
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


@dataclass(frozen=True)
class ImageFile:
    """An input image: ``id`` is its path relative to the inputs' common folder, without suffix
    (``'/'``-separated), so outputs of images in subfolders never collide."""

    id: str
    path: Path


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def list_images(spec: str | os.PathLike) -> list[ImageFile]:
    """The images ``spec`` names: a folder (its image files, not recursive), a glob (``**`` recurses)
    or one file (read whatever its suffix). Sorted by path; two files with one id raise :class:`DataError`."""
    text = os.path.expanduser(str(spec))
    path = Path(text)
    if path.is_dir():
        files, base = [p for p in path.iterdir() if _is_image(p)], path
    elif path.is_file():
        files, base = [path], path.parent
    elif any(c in text for c in "*?["):
        files = [Path(p) for p in glob.glob(text, recursive=True)]
        files = [p for p in files if _is_image(p)]
        base = Path(os.path.commonpath([str(p.parent) for p in files])) if files else Path(".")
    else:
        raise DataError(f"--images {spec}: no such file or folder; give a folder, a glob such as "
                        "'photos/*.jpg' (quoted) or one image file")
    if not files:
        raise DataError(f"--images {spec}: no image files ({', '.join(IMAGE_SUFFIXES)}) found")
    images = [ImageFile(p.relative_to(base).with_suffix("").as_posix(), p) for p in sorted(set(files))]
    seen: dict[str, Path] = {}
    for image in images:
        if image.id in seen:
            raise DataError(f"--images {spec}: {seen[image.id]} and {image.path} would write the same outputs "
                            f"(id {image.id!r}); rename one or select one of them with a glob")
        seen[image.id] = image.path
    return images


def read_rgb(path: str | os.PathLike) -> tuple[np.ndarray, str | None]:
    """RGB uint8 [H, W, 3] of an image file and a note of the conversion it needed (None: none).

    The EXIF orientation is applied (phone photos are stored sideways); 16-bit greyscale is scaled to
    8 bits; any other mode goes through PIL's ``convert("RGB")``, as training images do
    (:func:`wsss.data.base.read_image`): greyscale is replicated, alpha is dropped. An unreadable file
    raises :class:`DataError` naming it.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            notes = []
            if img.getexif().get(EXIF_ORIENTATION, 1) != 1:
                img = ImageOps.exif_transpose(img)
                notes.append("rotated by its EXIF orientation")
            mode = img.mode
            if mode in SIXTEEN_BIT_MODES:
                grey = np.clip(np.round(np.asarray(img, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
                rgb = np.repeat(grey[..., None], 3, axis=2)
                notes.append(f"16-bit greyscale ({mode}) scaled to 8 bits")
            else:
                rgb = np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
                if mode in ("L", "1"):
                    notes.append(f"greyscale ({mode}) converted to RGB")
                elif mode in ("RGBA", "LA", "PA", "RGBa", "La"):
                    notes.append(f"{mode}: alpha channel dropped")
                elif mode != "RGB":
                    notes.append(f"mode {mode} converted to RGB")
    except FileNotFoundError as exc:
        raise DataError(f"{path}: image file not found") from exc
    except Exception as exc:
        raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc
    return rgb, "; ".join(notes) or None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) :func:`read_rgb` will return, from the file header; :class:`DataError` if unreadable."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            if img.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                w, h = h, w
    except Exception as exc:
        raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc
    return h, w


def size_batches(sizes: Sequence[tuple[Hashable, tuple[int, int]]], batch_size: int,
                 max_pixels: int) -> list[list[Hashable]]:
    """Keys grouped by equal (h, w), in order of first appearance, each group cut into batches of at
    most ``batch_size`` images and ``max_pixels`` pixels (at least one image per batch)."""
    groups: dict[tuple[int, int], list[Hashable]] = defaultdict(list)
    for key, size in sizes:
        groups[tuple(size)].append(key)
    batches = []
    for (h, w), keys in groups.items():
        step = max(1, min(batch_size, max_pixels // max(1, h * w)))
        batches += [keys[i:i + step] for i in range(0, len(keys), step)]
    return batches


def log_conversions(notes: Sequence[tuple[Path, str]], limit: int = 10) -> None:
    """One log line per kind of conversion, naming the files (the first ``limit``)."""
    by_note: dict[str, list[Path]] = defaultdict(list)
    for path, note in notes:
        by_note[note].append(path)
    for note, paths in by_note.items():
        names = ", ".join(str(p) for p in paths[:limit])
        more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
        log.info("%d image(s): %s: %s%s", len(paths), note, names, more)


def skip_reason(path: Path, exc: Exception) -> str:
    """The error message of an unreadable file without its leading file name."""
    text = str(exc)
    return text[len(f"{path}: "):] if text.startswith(f"{path}: ") else text


def log_skipped(skipped: Sequence[tuple[Path, str]], what: str) -> None:
    """The end-of-run summary of unreadable files, every one named with its reason."""
    if not skipped:
        return
    lines = "\n  ".join(f"{p}: {reason}" for p, reason in skipped)
    log.warning("%s: skipped %d unreadable file(s):\n  %s", what, len(skipped), lines)
