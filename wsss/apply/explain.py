"""``wsss explain``: CAMs of a classifier on new images, one grid per image, and how faithful each
method is.

Each image is resized so that its shorter side is the working size (``--size``; default the model's
input size: a timm model's pretrained input size, a wsss classifier's training crop; 0 keeps the
image's size), both sides rounded to a multiple of 16 (models with one fixed input size get that
size). Images of one working size are batched. For every method, :func:`wsss.cams.compute_cams`
gives the chosen classes' maps (ReLU, divided by the max, bilinear to the working size); for a wsss
classifier the refiners' ``refine_cam`` follows, as in ``wsss cams``. The maps are single-scale: they
explain the score the model gives this very input.

Faithfulness: :func:`wsss.eval.faithfulness.faithfulness` on each batch (the map times the
normalised input for average drop and increase in confidence; deletion and insertion AUC with about
100 steps), averaged over every explained (image, class) pair. Scores are the model's probabilities
(:class:`~wsss.apply.explain_model.ExplainModel`).

Outputs in DIR (default ``OUT/explain``): ``<id>.png`` (the grid), ``classes.csv`` (the explained
classes and their scores) and ``faithfulness.{csv,md,png}``. Every file is written atomically; a
rerun recomputes everything (the faithfulness table is over all images). Unreadable files are named,
skipped and listed again at the end of the run.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from wsss.apply.classes import ClassChoice, parse_class_choice, unknown_name_error
from wsss.apply.explain_model import ExplainModel
from wsss.apply.images import (
    image_size,
    list_images,
    log_conversions,
    log_skipped,
    read_rgb,
    size_batches,
    skip_reason,
)
from wsss.data.transforms import normalise_image
from wsss.errors import ConfigError, DataError
from wsss.io import atomic_path, atomic_write_text, clean_stale_temps

log = logging.getLogger("wsss")

METRICS = {
    "average_drop": "average drop (%) ↓",
    "increase_in_confidence": "increase in confidence (%) ↑",
    "deletion_auc": "deletion AUC ↓",
    "insertion_auc": "insertion AUC ↑",
}
SIZE_MULTIPLE = 16
BATCH_PIXELS = 1 << 21


@dataclass
class ImageExplanation:
    """One image's explanation: ``image`` uint8 [h, w, 3] at the working size, the explained
    ``class_ids`` (logit indices) with names and scores, and ``cams`` {method: float32 [K, h, w] in [0, 1]}."""

    id: str
    image: np.ndarray
    class_ids: list[int]
    class_names: list[str]
    scores: list[float]
    cams: dict[str, np.ndarray]
    file: Path | None = None


@dataclass
class Explanations:
    """What :func:`explain_images` returns: the images (in input order), the faithfulness table
    {method: {metric: mean over pairs, "pairs": count}} and the skipped files with their reasons."""

    images: list[ImageExplanation]
    faithfulness: dict[str, dict[str, float]]
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def check_methods(methods: Sequence[str], model: ExplainModel) -> list[str]:
    """The methods, each a name of ``CAM_METHODS`` this model supports."""
    from wsss.cams import CAM_METHODS

    methods = [m.strip() for m in methods if m.strip()]
    if not methods:
        raise ConfigError(f"--methods: empty; choose from {', '.join(sorted(CAM_METHODS))}")
    for m in methods:
        if m not in CAM_METHODS:
            raise unknown_name_error("--methods", m, sorted(CAM_METHODS))
    if "attn_cam" in methods and not model.attention:
        raise ConfigError(f"--methods attn_cam needs a wsss ViT classifier (per-block attention); {model.source} "
                          "has none")
    return list(dict.fromkeys(methods))


def working_size(height: int, width: int, size: int, fixed: tuple[int, int] | None = None) -> tuple[int, int]:
    """(h, w) an image is explained at: shorter side ``size``, sides rounded to multiples of 16."""
    if fixed is not None:
        return tuple(fixed)
    if size <= 0:
        return height, width
    scale = size / min(height, width)
    return tuple(max(SIZE_MULTIPLE, round(s * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE) for s in (height, width))


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if image.shape[:2] == tuple(size):
        return image
    shrink = size[0] * size[1] < image.shape[0] * image.shape[1]
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


class FaithfulnessTotals:
    """Pair-weighted means of per-batch faithfulness results: the mean over all pairs."""

    def __init__(self, methods: Sequence[str]):
        self.parts: dict[str, list[tuple[dict[str, float], int]]] = {m: [] for m in methods}

    def add(self, method: str, metrics: dict[str, float], pairs: int) -> None:
        self.parts[method].append((metrics, pairs))

    def table(self) -> dict[str, dict[str, float]]:
        table = {}
        for method, parts in self.parts.items():
            pairs = sum(n for _, n in parts)
            if pairs == 0:
                continue
            row = {k: math.fsum(m[k] * n for m, n in parts) / pairs for k in METRICS}
            table[method] = {**row, "pairs": pairs}
        return table


def explain_batch(model: ExplainModel, ids: Sequence[str], images: Sequence[np.ndarray], methods: Sequence[str],
                  choice: ClassChoice, totals: FaithfulnessTotals | None) -> tuple[list[ImageExplanation], list[str]]:
    """Explanations of images uint8 [h, w, 3] of one size; faithfulness of each method added to
    ``totals``. Also returns the ids where ``predicted`` fell back to the top-1 class."""
    from wsss.cams import compute_cams
    from wsss.eval.faithfulness import faithfulness

    device = next(model.model.parameters()).device
    x = torch.stack([normalise_image(im, model.mean, model.std) for im in images]).to(device)
    with torch.no_grad():
        scores = model.scores(model.model(x)).float().cpu()
    chosen, fell_back = [], []
    for i, image_id in enumerate(ids):
        classes, fallback = choice.select(scores[i], image_id)
        chosen.append(classes)
        if fallback:
            fell_back.append(image_id)
    k = max(len(c) for c in chosen)
    targets = torch.full((len(ids), k), -1, dtype=torch.long)
    for i, classes in enumerate(chosen):
        targets[i, :len(classes)] = torch.tensor(classes, dtype=torch.long)
    targets = targets.to(device)
    h, w = x.shape[-2:]
    maps: dict[str, torch.Tensor] = {}
    for method in methods:
        if k == 0:
            maps[method] = torch.zeros(len(ids), 0, h, w)
            continue
        try:
            cams = compute_cams(model.model, x, targets, model.target_layer, method=method, normalize="max",
                                **model.cam_options(h, w))
        except ValueError as exc:
            raise ConfigError(f"--methods {method} on {model.source}: {exc}") from exc
        cams = model.refine(cams, x, targets)
        pairs = int((targets >= 0).sum())
        if totals is not None and pairs:
            totals.add(method, faithfulness(model.model, x, cams, targets, multilabel=model.multilabel), pairs)
        maps[method] = cams.float().cpu()
    results = []
    for i, image_id in enumerate(ids):
        n = len(chosen[i])
        results.append(ImageExplanation(
            image_id, images[i], list(chosen[i]), [model.class_names[c] for c in chosen[i]],
            [float(scores[i, c]) for c in chosen[i]], {m: maps[m][i, :n].numpy() for m in methods}))
    return results, fell_back


def explain_sources(model: ExplainModel, sources: Sequence[tuple[str, Path | np.ndarray]], methods: Sequence[str],
                    choice: ClassChoice, size: int | None = None, with_faithfulness: bool = True,
                    batch_size: int = 8, progress: bool = False, keep: bool = True,
                    on_image: Callable[[ImageExplanation], None] | None = None) -> Explanations:
    """Explain ``(id, file or RGB array)`` sources; ``on_image`` sees every explanation as it is made,
    ``keep=False`` does not keep them (a large folder)."""
    size = model.size if size is None else size
    choice.check_images([i for i, _ in sources])
    skipped: list[tuple[Path, str]] = []
    sized = []
    for index, (_, source) in enumerate(sources):
        try:
            h, w = source.shape[:2] if isinstance(source, np.ndarray) else image_size(source)
        except DataError as exc:
            log.warning("skipping %s", exc)
            skipped.append((source, skip_reason(source, exc)))
            continue
        sized.append((index, working_size(h, w, size, model.fixed_size)))
    target_size = dict(sized)
    totals = FaithfulnessTotals(methods) if with_faithfulness else None
    done: dict[int, ImageExplanation] = {}
    conversions, fell_back = [], []
    bar = tqdm(total=len(sized), desc="explain", unit="img", disable=not progress)
    for batch in size_batches(sized, batch_size, BATCH_PIXELS):
        loaded = []
        for index in batch:
            image_id, source = sources[index]
            if isinstance(source, np.ndarray):
                rgb = source
            else:
                try:
                    rgb, note = read_rgb(source)
                except DataError as exc:
                    log.warning("skipping %s", exc)
                    skipped.append((source, skip_reason(source, exc)))
                    bar.update(1)
                    continue
                if note:
                    conversions.append((source, note))
            loaded.append((index, resize_rgb(rgb, target_size[index])))
        if not loaded:
            continue
        results, fallbacks = explain_batch(model, [sources[i][0] for i, _ in loaded], [im for _, im in loaded],
                                           methods, choice, totals)
        fell_back += fallbacks
        for (index, _), result in zip(loaded, results):
            source = sources[index][1]
            result.file = None if isinstance(source, np.ndarray) else Path(source)
            if on_image is not None:
                on_image(result)
            if keep:
                done[index] = result
            bar.update(1)
    bar.close()
    log_conversions(conversions)
    if fell_back:
        log.info("%d image(s) have no class scoring >= %.2f; their top-1 class is explained: %s%s", len(fell_back),
                 choice.threshold, ", ".join(fell_back[:10]), " ..." if len(fell_back) > 10 else "")
    return Explanations([done[i] for i in sorted(done)], totals.table() if totals else {}, skipped)


def faithfulness_csv(table: dict[str, dict[str, float]]) -> str:
    """Full-precision CSV: method, the four metrics, pairs."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["method", *METRICS, "pairs"])
    for method, row in table.items():
        writer.writerow([method, *[repr(float(row[k])) for k in METRICS], int(row["pairs"])])
    return buf.getvalue()


def faithfulness_markdown(table: dict[str, dict[str, float]], source: str, images: int) -> str:
    lines = [f"Faithfulness of each CAM method: {source}, {images} image(s); means over the explained "
             "(image, class) pairs.", "",
             "| method | " + " | ".join(METRICS.values()) + " | pairs |",
             "|---|" + "---:|" * (len(METRICS) + 1)]
    for method, row in table.items():
        values = [f"{row[k]:.2f}" if k in ("average_drop", "increase_in_confidence") else f"{row[k]:.3f}"
                  for k in METRICS]
        lines.append(f"| {method} | " + " | ".join(values) + f" | {int(row['pairs'])} |")
    return "\n".join(lines) + "\n"


def plot_faithfulness(table: dict[str, dict[str, float]], path: Path, title: str = "") -> Path:
    """Bars per metric (AUCs in percent), one colour per method."""
    from wsss.viz.plots import plot_grouped_bars

    groups = [label.replace("AUC", "AUC (%)") for label in METRICS.values()]
    series = {m: [row[k] * (100.0 if k.endswith("_auc") else 1.0) for k in METRICS] for m, row in table.items()}
    return plot_grouped_bars(groups, series, path, ylabel="%", title=title or "CAM faithfulness")


def classes_csv(rows: Sequence[tuple[str, str, str, float]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "file", "class", "score"])
    writer.writerows([(i, f, c, f"{s:.6f}") for i, f, c, s in rows])
    return buf.getvalue()


def write_grid(path: Path, explanation: ImageExplanation) -> None:
    from wsss.viz.grid import explain_grid

    titles = [f"{name} {score:.2f}" for name, score in zip(explanation.class_names, explanation.scores)]
    grid = explain_grid(explanation.image, explanation.cams, titles, title=explanation.id)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG", optimize=True)


def explain_folder(model: ExplainModel, images: str, out: str | Path, methods: Sequence[str], choice: ClassChoice,
                   size: int | None = None, with_faithfulness: bool = True, batch_size: int = 8,
                   progress: bool = True) -> Explanations:
    """Explain the images ``images`` names into ``out`` (grids, classes.csv, faithfulness table)."""
    out = Path(out)
    files = list_images(images)
    for folder in {(out / f"{f.id}.png").parent for f in files} | {out}:
        clean_stale_temps(folder)
    rows: list[tuple[str, str, str, float]] = []

    def write(explanation: ImageExplanation) -> None:
        write_grid(out / f"{explanation.id}.png", explanation)
        rows.extend((explanation.id, str(explanation.file), n, s)
                    for n, s in zip(explanation.class_names, explanation.scores))

    result = explain_sources(model, [(f.id, f.path) for f in files], methods, choice, size, with_faithfulness,
                             batch_size, progress, keep=False, on_image=write)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "classes.csv", classes_csv(rows))
    if result.faithfulness:
        atomic_write_text(out / "faithfulness.csv", faithfulness_csv(result.faithfulness))
        atomic_write_text(out / "faithfulness.md", faithfulness_markdown(result.faithfulness, model.source,
                                                                         len(files) - len(result.skipped)))
        plot_faithfulness(result.faithfulness, out / "faithfulness.png")
        print(faithfulness_markdown(result.faithfulness, model.source, len(files) - len(result.skipped)))
    log_skipped(result.skipped, "explain")
    log.info("explain: %d image grid(s) in %s (%d skipped)", len(files) - len(result.skipped), out,
             len(result.skipped))
    return result


def run_explain(cfg, images: str, ckpt: str | None = None, timm_name: str | None = None, weights: str | None = None,
                methods: str | None = None, classes: str = "predicted", threshold: float = 0.5,
                target_layer: str | None = None, size: int | None = None, labels: str | None = None,
                class_names: str | None = None, scores: str | None = None, with_faithfulness: bool = True,
                out: str | None = None, batch_size: int = 8) -> Explanations:
    """``wsss explain``: the wsss classifier of the config's OUT (or ``ckpt``), or the timm model
    ``timm_name`` with ``weights``, explained on ``images`` into ``out`` (default ``OUT/explain``)."""
    from wsss.apply.explain_model import build_explain_model
    from wsss.apply.predict import inference_device

    dataset_names = None
    if timm_name is None:
        from wsss.stages.cams import checkpoint_path

        if not ckpt:
            ckpt = str(checkpoint_path(cfg, None))
        dataset_names = configured_class_names(cfg)
    model = build_explain_model(ckpt, timm_name, weights, target_layer, class_names, scores, dataset_names,
                                cfg.cams.target_layer, cfg.classifier.crop_size)
    model.model.to(inference_device(cfg.trainer.accelerator))
    method_list = check_methods((methods or ",".join(cfg.cams.overlay_methods)).split(","), model)
    choice = parse_class_choice(classes, model.class_names, threshold, labels)
    if batch_size < 1:
        raise ConfigError(f"--batch_size must be at least 1, got {batch_size}")
    return explain_folder(model, images, Path(out) if out else cfg.out_dir / "explain", method_list, choice, size,
                          with_faithfulness, batch_size, cfg.progress)


def configured_class_names(cfg) -> list[str] | None:
    """Foreground class names of the config's dataset (None, logged, when it cannot be opened; a missing
    root is not created, so the built-in synthetic set is never generated for its names)."""
    from wsss.errors import WSSSError
    from wsss.stages.common import dataset_for

    if not Path(cfg.data.root).exists():
        log.warning("class names: dataset root %s not found; naming classes class1.. (give --class_names FILE)",
                    cfg.data.root)
        return None
    try:
        return list(dataset_for(cfg, cfg.data.train_split).class_names[1:])
    except WSSSError as exc:
        log.warning("class names: the configured dataset cannot be opened (%s); naming classes class1.. "
                    "(give --class_names FILE)", str(exc).splitlines()[0])
        return None


def as_explain_model(model: Any, weights: str | Path | None = None, target_layer: str | None = None,
                     class_names: Sequence[str] | None = None, scores: str | None = None) -> ExplainModel:
    """An :class:`ExplainModel` of: itself; a wsss classifier checkpoint path; a timm model name (with
    ``weights``); a :class:`wsss.models.classifier.Classifier`; a timm model instance."""
    from wsss.apply import explain_model as em
    from wsss.models.classifier import Classifier

    if isinstance(model, em.ExplainModel):
        return model
    if isinstance(model, (str, Path)) and Path(model).is_file():
        built = em.from_wsss_checkpoint(model, target_layer=target_layer or "feature_map")
    elif isinstance(model, str):
        built = em.from_timm(model, weights, target_layer, scores=scores or "softmax")
    elif isinstance(model, Classifier):
        built = em.from_wsss_classifier(model, target_layer=target_layer or "feature_map")
    elif isinstance(model, torch.nn.Module) and hasattr(model, "forward_features"):
        built = em.from_timm_module(model, target_layer, scores=scores or "softmax")
    else:
        raise ConfigError(f"model: expected a wsss classifier checkpoint, a timm model name, a wsss Classifier or "
                          f"a timm model; got {type(model).__name__}")
    if class_names is not None:
        if len(class_names) != len(built.class_names):
            raise ConfigError(f"class_names: {len(class_names)} names for {len(built.class_names)} classes")
        built.class_names = list(class_names)
    return built


def explain_images(images: Any, model: Any, methods: Sequence[str] | str = ("cam", "gradcam", "gradcampp", "layercam"),
                   classes: str = "predicted", threshold: float = 0.5, weights: str | Path | None = None,
                   target_layer: str | None = None, size: int | None = None, labels: str | Path | None = None,
                   class_names: Sequence[str] | None = None, scores: str | None = None, faithfulness: bool = True,
                   device: str | None = None, batch_size: int = 8) -> Explanations:
    """CAMs and faithfulness as arrays (``wsss.explain``); nothing is written.

    ``images``: a folder, glob or file path, an RGB uint8 array [H, W, 3], or a list of paths and
    arrays (arrays get ids ``"0"``, ``"1"``, ... by position). ``model``: see :func:`as_explain_model`.
    The other arguments are those of ``wsss explain`` (module docstring, :mod:`wsss.apply.classes`).
    """
    from wsss.apply.predict import check_rgb, inference_device

    built = as_explain_model(model, weights, target_layer, class_names, scores)
    built.model.to(torch.device(device) if device else inference_device())
    method_list = check_methods(methods.split(",") if isinstance(methods, str) else list(methods), built)
    choice = parse_class_choice(classes, built.class_names, threshold, labels)
    sources: list[tuple[str, Path | np.ndarray]] = []
    for position, item in enumerate(images if isinstance(images, (list, tuple)) else [images]):
        if isinstance(item, np.ndarray):
            sources.append((str(position), check_rgb(item, str(position))))
        else:
            sources += [(f.id, f.path) for f in list_images(item)]
    return explain_sources(built, sources, method_list, choice, size, faithfulness, batch_size)
