"""Which classes ``wsss explain`` explains in each image (``--classes``).

* ``predicted`` (default): every class scoring at least the threshold; an image where none does gets
  its top-1 class (noted in the log).
* ``top1``, ``topk:K``: the K best-scoring classes.
* ``present``: the image's labels, read from a CSV with header ``image,labels`` (the ``labels.csv`` of
  a custom-folder dataset: class names separated by spaces, or by ``;`` when names contain spaces).
  Without such a file the choice is refused: new images have no labels.
* ``NAME,NAME,...``: these classes in every image.

Classes are explained in decreasing score order, except named ones, which keep the given order.
"""

from __future__ import annotations

import csv
import difflib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from wsss.errors import ConfigError, DataError

KINDS = ("predicted", "top1", "topk:K", "present", "NAME,...")


def unknown_name_error(option: str, name: str, valid: list[str]) -> ConfigError:
    """``option``: ``name`` is not one of ``valid``: the closest names, then every valid one."""
    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5)
    lowered = [v for v in valid if name.lower() in v.lower()][:5]
    hint = list(dict.fromkeys(close + lowered))
    first = f"; closest: {', '.join(hint)}" if hint else ""
    return ConfigError(f"{option}: unknown name {name!r}{first}; valid names ({len(valid)}): {', '.join(valid)}")


def resolve_class(name: str, class_names: list[str]) -> int:
    """Index of ``name`` (exact, else the one case-insensitive match)."""
    if name in class_names:
        return class_names.index(name)
    folded = [i for i, n in enumerate(class_names) if n.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    raise unknown_name_error("--classes", name, class_names)


def read_labels(path: str | Path, class_names: list[str]) -> dict[str, tuple[int, ...]]:
    """``{image id: class indices}`` of a labels CSV (``image,labels``); ids drop the file suffix."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--labels: file {path} not found")
    labels: dict[str, tuple[int, ...]] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or [h.strip() for h in reader.fieldnames[:2]] != ["image", "labels"]:
            raise DataError(f"{path}: header must be `image,labels`, got {reader.fieldnames}")
        for row in reader:
            text = (row["labels"] or "").strip()
            if ";" in text:
                names = [n.strip() for n in text.split(";") if n.strip()]
            elif text in class_names:
                names = [text]
            else:
                names = text.split()
            labels[Path(row["image"].strip()).with_suffix("").as_posix()] = tuple(
                resolve_class(n, class_names) for n in names)
    return labels


@dataclass(frozen=True)
class ClassChoice:
    """A parsed ``--classes`` value; :meth:`select` applies it to one image's scores."""

    kind: str
    k: int = 1
    threshold: float = 0.5
    indices: tuple[int, ...] = ()
    labels: dict[str, tuple[int, ...]] = field(default_factory=dict)
    labels_file: str = ""

    def labels_of(self, image_id: str) -> tuple[int, ...] | None:
        return self.labels.get(image_id, self.labels.get(Path(image_id).name))

    def check_images(self, image_ids: list[str]) -> None:
        """``present`` needs a labels row for every image."""
        if self.kind != "present":
            return
        missing = [i for i in image_ids if self.labels_of(i) is None]
        if missing:
            raise DataError(f"--labels {self.labels_file}: no row for {len(missing)} image(s), e.g. {missing[:5]}; "
                            "--classes present explains each image's labelled classes")

    def select(self, scores: torch.Tensor, image_id: str) -> tuple[list[int], bool]:
        """(class indices to explain, whether ``predicted`` fell back to the top-1 class) for scores [C]."""
        order = torch.sort(scores, descending=True, stable=True).indices.tolist()
        if self.kind == "predicted":
            chosen = [c for c in order if float(scores[c]) >= self.threshold]
            return (chosen, False) if chosen else (order[:1], True)
        if self.kind == "topk":
            return order[:self.k], False
        if self.kind == "present":
            present = set(self.labels_of(image_id) or ())
            return [c for c in order if c in present], False
        return list(self.indices), False


def parse_class_choice(spec: str, class_names: list[str], threshold: float = 0.5,
                       labels_file: str | Path | None = None) -> ClassChoice:
    """The choice ``spec`` names (grammar in the module docstring)."""
    spec = spec.strip()
    if spec == "predicted":
        return ClassChoice("predicted", threshold=threshold)
    if spec == "top1" or spec.startswith("topk:"):
        text = "1" if spec == "top1" else spec[len("topk:"):]
        if not text.isdigit() or int(text) < 1:
            raise ConfigError(f"--classes {spec}: K must be a positive integer (topk:3)")
        return ClassChoice("topk", k=min(int(text), len(class_names)))
    if spec == "present":
        if labels_file is None:
            raise ConfigError("--classes present needs the images' labels: pass --labels FILE (CSV `image,labels`, "
                              "the labels.csv of a folder dataset), or choose predicted, top1, topk:K or class names")
        return ClassChoice("present", labels=read_labels(labels_file, class_names), labels_file=str(labels_file))
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"--classes: empty; choose one of {', '.join(KINDS)}")
    return ClassChoice("names", indices=tuple(dict.fromkeys(resolve_class(n, class_names) for n in names)))
