"""The built-in synthetic dataset: generated from a seed, written in the VOC layout.

It is the demo's default data and the fixture of most tests, so it is made hard in the ways real
WSSS data is hard:

* every class is a large plain *body* whose colour family is shared with other classes (weakly
  discriminative) carrying a small patterned *part* in a class-specific colour (10-20 % of the
  object): a classifier can rely on the part, so plain CAMs under-cover the body;
* ``boat`` almost always floats on a ``water`` texture and ``tree`` stands on ``grass``; both
  contexts are labelled background, so CAMs bleed into them;
* textured, cluttered backgrounds and distractor shapes in body colours that belong to no class;
* 1-3 objects per image of varied scale and position that occlude each other;
* sharp colour edges around objects (a dense CRF can snap to them), mild noise and JPEG artefacts.

The tree is ``ROOT/VOCdevkit/VOC2012`` with ``JPEGImages``, ``SegmentationClass``,
``SegmentationClassAug`` and ``ImageSets/Segmentation/{train,train_aug,val}.txt``, plus
``classes.txt`` and ``synthetic.json`` (the generator settings; a root generated with the same
settings is reused as it is).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from wsss.data.palette import PALETTE
from wsss.data.voc import VOCDataset

GENERATOR_VERSION = 1

CLASSES = ["background", "boat", "bird", "car", "flower", "fish", "house", "tree"]

# Body colour families are shared between classes on purpose (the body alone is ambiguous).
BODY_FAMILIES = {
    "warm": [(170, 90, 60), (190, 120, 70), (150, 80, 50)],
    "cool": [(70, 100, 150), (90, 120, 170), (60, 90, 130)],
    "neutral": [(140, 140, 130), (160, 155, 140), (120, 115, 110)],
}
# name: (body shape, body colour family, part shape, part colour, part pattern, context)
CLASS_SPECS = {
    "boat": ("hull", "warm", "triangle", (245, 245, 245), "stripes", "water"),
    "bird": ("ellipse", "cool", "circle", (250, 200, 0), "solid", None),
    "car": ("rect", "cool", "rect", (220, 30, 30), "checker", None),
    "flower": ("circle", "warm", "circle", (200, 40, 200), "dots", None),
    "fish": ("diamond", "neutral", "triangle", (255, 130, 0), "stripes", None),
    "house": ("rect", "warm", "triangle", (40, 40, 40), "solid", None),
    "tree": ("triangle", "neutral", "circle", (30, 200, 60), "dots", "grass"),
}
CONTEXT_COLOURS = {"water": ((30, 70, 160), (60, 120, 200)), "grass": ((40, 110, 30), (90, 160, 60))}


@dataclass(frozen=True)
class SyntheticSettings:
    """Generator knobs (every field is recorded in ``synthetic.json``)."""

    n_train: int = 600
    n_val: int = 150
    image_size: int = 128
    seed: int = 0
    context_probability: float = 0.9
    max_distractors: int = 3
    part_fraction: tuple[float, float] = (0.10, 0.20)
    min_objects: int = 1
    max_objects: int = 3
    jpeg_quality: int = 92


def _shape_mask(shape: str, h: int, w: int, box: tuple[int, int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Boolean [h, w] mask of ``shape`` inscribed in ``box`` = (y0, x0, bh, bw)."""
    y0, x0, bh, bw = box
    canvas = np.zeros((h, w), np.uint8)
    cy, cx = y0 + bh / 2, x0 + bw / 2
    if shape in ("ellipse", "circle"):
        axes = (max(1, int(bw / 2)), max(1, int(bh / 2))) if shape == "ellipse" else (max(1, int(min(bh, bw) / 2)),) * 2
        cv2.ellipse(canvas, (int(cx), int(cy)), axes, float(rng.uniform(-30, 30)), 0, 360, 1, -1)
    else:
        if shape == "rect":
            pts = [(x0, y0), (x0 + bw, y0), (x0 + bw, y0 + bh), (x0, y0 + bh)]
        elif shape == "triangle":
            pts = [(cx, y0), (x0 + bw, y0 + bh), (x0, y0 + bh)]
        elif shape == "diamond":
            pts = [(cx, y0), (x0 + bw, cy), (cx, y0 + bh), (x0, cy)]
        elif shape == "hull":
            pts = [(x0, y0 + bh * 0.35), (x0 + bw, y0 + bh * 0.35), (x0 + bw * 0.8, y0 + bh), (x0 + bw * 0.2, y0 + bh)]
        else:
            raise ValueError(shape)
        cv2.fillPoly(canvas, [np.round(np.array(pts)).astype(np.int32)], 1)
    return canvas.astype(bool)


def _pattern(kind: str, h: int, w: int, colour, rng: np.random.Generator) -> np.ndarray:
    """float32 [h, w, 3] texture of the part: its colour modulated by a pattern."""
    yy, xx = np.mgrid[0:h, 0:w]
    period = int(rng.integers(3, 6))
    if kind == "stripes":
        mod = ((xx + yy) // period) % 2
    elif kind == "checker":
        mod = ((xx // period) + (yy // period)) % 2
    elif kind == "dots":
        mod = (((xx % (2 * period)) - period) ** 2 + ((yy % (2 * period)) - period) ** 2 < (period * 0.7) ** 2)
    else:
        mod = np.ones((h, w))
    base = np.array(colour, np.float32)
    return base * (0.7 + 0.3 * mod[..., None].astype(np.float32))


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [size, size, 3]: gradient, coloured noise and random stripes (cluttered, classless)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0, c1 = rng.uniform(60, 200, 3), rng.uniform(60, 200, 3)
    angle = rng.uniform(0, np.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
    img = c0 * (1 - t) + c1 * t
    low = cv2.resize(rng.normal(0, 18, (8, 8, 3)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    img = img + low
    if rng.random() < 0.6:
        freq = rng.uniform(6, 20)
        img = img + 14 * np.sin(2 * np.pi * freq * (xx * np.cos(angle + 1) + yy * np.sin(angle + 1)))[..., None]
    return img.astype(np.float32)


def _context(kind: str, size: int, region: np.ndarray, img: np.ndarray, rng: np.random.Generator) -> None:
    """Paint a context texture (``water`` waves or ``grass`` blades) into ``region`` of ``img``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c0, c1 = (np.array(c, np.float32) for c in CONTEXT_COLOURS[kind])
    if kind == "water":
        wave = 0.5 + 0.5 * np.sin(xx / rng.uniform(2.5, 4.0) + 2.0 * np.sin(yy / rng.uniform(3, 6)))
    else:
        wave = 0.5 + 0.5 * np.sin(xx * rng.uniform(1.2, 2.0)) * np.cos(yy / rng.uniform(1.5, 3))
    tex = c0 * (1 - wave[..., None]) + c1 * wave[..., None]
    img[region] = tex[region]


def _context_region(size: int, obj_box: tuple[int, int, int, int], rng: np.random.Generator) -> np.ndarray:
    """A band or blob around and below an object, much larger than it."""
    y0, x0, bh, bw = obj_box
    region = np.zeros((size, size), np.uint8)
    if rng.random() < 0.5:
        top = int(max(0, y0 + bh * rng.uniform(0.3, 0.6)))
        region[top:] = 1
    else:
        cy, cx = int(y0 + bh * 0.7), int(x0 + bw / 2)
        cv2.ellipse(region, (cx, cy), (int(bw * rng.uniform(1.0, 1.6)), int(bh * rng.uniform(0.8, 1.3))), 0, 0, 360, 1, -1)
    return region.astype(bool)


def render_image(settings: SyntheticSettings, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """One image uint8 [S, S, 3], its mask uint8 [S, S] and bookkeeping (parts, contexts)."""
    size = settings.image_size
    names = CLASSES[1:]
    img = _background(size, rng)
    mask = np.zeros((size, size), np.uint8)
    info = {"objects": [], "part_pixels": {}, "body_pixels": {}, "contexts": []}
    n_obj = int(rng.integers(settings.min_objects, settings.max_objects + 1))
    classes = rng.choice(len(names), size=n_obj, replace=True) + 1
    boxes = []
    for _ in classes:
        side = int(size * rng.uniform(0.25, 0.6))
        aspect = rng.uniform(0.7, 1.4)
        bh, bw = max(8, int(side * aspect ** 0.5)), max(8, int(side / aspect ** 0.5))
        bh, bw = min(bh, size - 2), min(bw, size - 2)
        y0, x0 = int(rng.integers(0, size - bh)), int(rng.integers(0, size - bw))
        boxes.append((y0, x0, bh, bw))
    for cls, box in zip(classes, boxes):
        context = CLASS_SPECS[names[cls - 1]][5]
        if context is not None and rng.random() < settings.context_probability:
            _context(context, size, _context_region(size, box, rng), img, rng)
            info["contexts"].append((int(cls), context))
    for _ in range(int(rng.integers(0, settings.max_distractors + 1))):
        side = int(size * rng.uniform(0.1, 0.3))
        y0, x0 = int(rng.integers(0, size - side)), int(rng.integers(0, size - side))
        shape = str(rng.choice(["ellipse", "rect", "triangle", "diamond", "circle"]))
        family = BODY_FAMILIES[str(rng.choice(list(BODY_FAMILIES)))]
        d = _shape_mask(shape, size, size, (y0, x0, side, side), rng)
        img[d] = np.array(family[int(rng.integers(len(family)))], np.float32) + rng.normal(0, 6, 3)
    for cls, box in zip(classes, boxes):
        body_shape, family, part_shape, part_colour, pattern, _ = CLASS_SPECS[names[cls - 1]]
        body = _shape_mask(body_shape, size, size, box, rng)
        if body.sum() < 20:
            continue
        colours = BODY_FAMILIES[family]
        colour = np.array(colours[int(rng.integers(len(colours)))], np.float32) + rng.normal(0, 8, 3)
        y0, x0, bh, bw = box
        shade = np.linspace(1.08, 0.9, bh)[:, None, None]
        img[y0:y0 + bh, x0:x0 + bw][body[y0:y0 + bh, x0:x0 + bw]] = (colour * shade * np.ones((bh, bw, 1)))[
            body[y0:y0 + bh, x0:x0 + bw]]
        frac = rng.uniform(*settings.part_fraction)
        ys, xs = np.nonzero(body)
        pside = max(3, int(np.sqrt(frac * body.sum())))
        for _attempt in range(6):
            k = int(rng.integers(len(ys)))
            py0, px0 = int(np.clip(ys[k] - pside // 2, 0, size - pside)), int(np.clip(xs[k] - pside // 2, 0, size - pside))
            part = _shape_mask(part_shape, size, size, (py0, px0, pside, pside), rng) & body
            if part.sum() >= 0.6 * min(pside * pside * 0.5, frac * body.sum()):
                break
        tex = _pattern(pattern, size, size, part_colour, rng)
        img[part] = tex[part]
        mask[body] = cls
        info["objects"].append(int(cls))
        info["part_pixels"][len(info["objects"]) - 1] = int(part.sum())
        info["body_pixels"][len(info["objects"]) - 1] = int(body.sum())
    img = img + rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), mask, info


def _write_split(voc: Path, split: str, ids: list[str]) -> None:
    (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")


def generate_synthetic(root: str | Path, n_train: int = 600, n_val: int = 150, image_size: int = 128, seed: int = 0,
                       **knobs) -> Path:
    """Generate (or reuse) the synthetic set under ``root``; returns ``root``.

    The output is a pure function of the settings: the same settings give byte-identical files.
    Generation goes to a temporary folder that is renamed into place, so an interrupted run never
    leaves a half-written dataset behind.
    """
    root = Path(root)
    settings = SyntheticSettings(n_train=n_train, n_val=n_val, image_size=image_size, seed=seed, **knobs)
    manifest = {"version": GENERATOR_VERSION, **asdict(settings)}
    manifest["part_fraction"] = list(settings.part_fraction)
    existing = root / "synthetic.json"
    if existing.is_file() and json.loads(existing.read_text()) == manifest:
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-synthetic-", dir=root.parent))
    try:
        voc = tmp / "VOCdevkit" / "VOC2012"
        for sub in ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "ImageSets/Segmentation"):
            (voc / sub).mkdir(parents=True)
        rng = np.random.default_rng(settings.seed)
        splits = {"train": [], "val": []}
        flat_palette = PALETTE.reshape(-1).tolist()
        for split, n in (("train", settings.n_train), ("val", settings.n_val)):
            for i in range(n):
                image_id = f"{split}_{i:05d}"
                image, mask, _ = render_image(settings, rng)
                Image.fromarray(image).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=settings.jpeg_quality)
                png = Image.fromarray(mask, mode="P")
                png.putpalette(flat_palette)
                png.save(voc / "SegmentationClass" / f"{image_id}.png")
                shutil.copyfile(voc / "SegmentationClass" / f"{image_id}.png",
                                voc / "SegmentationClassAug" / f"{image_id}.png")
                splits[split].append(image_id)
        _write_split(voc, "train", splits["train"])
        _write_split(voc, "train_aug", splits["train"])
        _write_split(voc, "val", splits["val"])
        (tmp / "classes.txt").write_text("\n".join(CLASSES) + "\n")
        (tmp / "synthetic.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


class SyntheticDataset(VOCDataset):
    """A split of the built-in synthetic set, generated under ``root`` on first use.

    Keyword arguments other than ``mask_dir``/``skip_bad_images`` are generator settings
    (:class:`SyntheticSettings`).
    """

    def __init__(self, root: str | Path, split: str, mask_dir: str | Path | None = None,
                 skip_bad_images: bool = False, **settings):
        generate_synthetic(root, **settings)
        super().__init__(root, split, class_names=CLASSES, mask_dir=mask_dir, skip_bad_images=skip_bad_images)
