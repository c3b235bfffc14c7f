"""What made a stage's outputs: the config fields the stage reads, the fingerprints of its inputs and
the version of the code that decides its results, hashed into one digest.

Each stage records its fingerprint in ``OUT/stages.json`` when it starts and marks the record
complete when it ends. A rerun with an equal fingerprint skips the finished stage (or resumes an
unfinished one); a different fingerprint stops with the list of what changed, so old and new files
are never mixed. ``wsss compare`` computes the same fingerprints before running anything and lets
entries with equal fingerprints share a stage's outputs.

Fields that only change how fast or how verbosely a stage runs (workers, loggers, progress bars,
the accelerator, the memory format) are not part of a fingerprint; nor are the evaluation settings
of the segmenter, whose evaluation is rerun every time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsss.config import RunConfig

# Bumped when a stage's code changes what it writes for the same settings (older outputs are stale).
CODE_VERSIONS = {"train_cls": 1, "cams": 1, "pseudo": 1, "train_aff": 1, "pseudo_rw": 1, "train_seg": 1,
                 "train_lvc": 1}

NOT_FINGERPRINTED = {
    "cams.overlay_methods", "pseudo.workers",
    "segmenter.masks", "segmenter.fully_supervised", "segmenter.eval_scales", "segmenter.eval_flip",
    "segmenter.eval_crf",
}
# Fields added after runs were recorded without them, with the default that reproduces those runs: at
# that default a field stays out of the fingerprint, so an older run still matches and resumes.
ADDED_WITH_DEFAULT = {"classifier.prior_bias": False, "affinity.rw_par": False,
                      "affinity.rw_background": "threshold", "affinity.rw_bg_power": 16.0,
                      "affinity.rw_cam_power": 1.0}
_NOT_ADDED = object()
DATA_TRAIN = ("data.name", "data.root", "data.train_split", "data.val_split", "data.kwargs",
              "data.skip_bad_images")
DATA_CAM = ("data.name", "data.root", "data.cam_split", "data.kwargs", "data.skip_bad_images")
TRAINER = ("trainer.devices", "trainer.num_nodes", "trainer.precision")
AFFINITY_TRAIN = tuple(f"affinity.{name}" for name in (
    "backbone", "pretrained", "backbone_kwargs", "conf_fg_threshold", "conf_bg_threshold", "conf_crf", "radius",
    "optimizer", "lr", "weight_decay", "momentum", "max_steps", "batch_size", "crop_size", "scale_range"))
AFFINITY_WALK = ("affinity.rw_radius", "affinity.beta", "affinity.exp_times", "affinity.rw_background",
                 "affinity.rw_bg_power", "affinity.rw_cam_power", "affinity.rw_par", "affinity.rw_bg_threshold")
STAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "train_cls": ("seed", *DATA_TRAIN, *TRAINER, "classifier"),
    "cams": (*DATA_CAM, "cams"),
    "pseudo": (*DATA_CAM, "pseudo"),
    "train_aff": ("seed", *DATA_CAM, *TRAINER, *AFFINITY_TRAIN),
    "pseudo_rw": (*DATA_CAM, *AFFINITY_WALK),
    "train_seg": ("seed", *DATA_TRAIN, *TRAINER, "segmenter"),
    "train_lvc": ("seed", *DATA_TRAIN, *TRAINER, "lvc"),
}


def _plain(value: Any) -> Any:
    """JSON-comparable form of a config value (tuples as lists, dataclasses as dicts)."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def config_fields(cfg: RunConfig, names: tuple[str, ...]) -> dict[str, Any]:
    """``{dotted name: value}`` of the named fields; a section name stands for all its fields."""
    out: dict[str, Any] = {}
    for name in names:
        value: Any = cfg
        for part in name.split("."):
            value = getattr(value, part)
        named = ([(f"{name}.{f.name}", getattr(value, f.name)) for f in dataclasses.fields(value)]
                 if dataclasses.is_dataclass(value) else [(name, value)])
        for dotted, field_value in named:
            field_value = _plain(field_value)
            if dotted in NOT_FINGERPRINTED or ADDED_WITH_DEFAULT.get(dotted, _NOT_ADDED) == field_value:
                continue
            out[dotted] = field_value
    return out


@dataclass(frozen=True)
class Fingerprint:
    """A stage's settings, its inputs' fingerprints and its code version; ``digest`` hashes them."""

    stage: str
    fields: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)
    version: int = 1

    @property
    def digest(self) -> str:
        blob = json.dumps({"stage": self.stage, "fields": self.fields, "inputs": self.inputs,
                           "version": self.version}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def record(self) -> dict[str, Any]:
        return {"fingerprint": self.digest,
                "made_from": {"fields": self.fields, "inputs": self.inputs, "version": self.version}}

    def changes(self, record: dict[str, Any]) -> list[str]:
        """What differs between ``record`` (a stage record) and this fingerprint, one line each."""
        made = record.get("made_from", {})
        lines = []
        old_fields = made.get("fields", {})
        for name in sorted(set(old_fields) | set(self.fields)):
            old, new = old_fields.get(name, "<unset>"), self.fields.get(name, "<unset>")
            if old != new:
                lines.append(f"{name}: {json.dumps(old)} -> {json.dumps(new)}")
        old_inputs = made.get("inputs", {})
        for name in sorted(set(old_inputs) | set(self.inputs)):
            if old_inputs.get(name) != self.inputs.get(name):
                lines.append(f"input {name}: {old_inputs.get(name)} -> {self.inputs.get(name)} "
                             f"(the {name} outputs were remade or replaced)")
        if made.get("version", self.version) != self.version:
            lines.append(f"code version of stage {self.stage}: {made.get('version')} -> {self.version}")
        return lines or ["(the recorded fingerprint differs)"]


def stage_fingerprint(cfg: RunConfig, stage: str, inputs: dict[str, str] | None = None,
                      extra_fields: dict[str, Any] | None = None) -> Fingerprint:
    """The fingerprint of ``stage`` (a key of :data:`STAGE_FIELDS`) for ``cfg``;
    ``extra_fields`` are settings a stage gets from its caller rather than from the config."""
    fields = {**config_fields(cfg, STAGE_FIELDS[stage]), **_plain(extra_fields or {})}
    return Fingerprint(stage, fields, dict(inputs or {}), CODE_VERSIONS[stage])


def file_digest(path: Path) -> str:
    """``file:<sha256 prefix>`` of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "file:" + h.hexdigest()[:16]


def folder_digest(folder: Path) -> str:
    """``files:<sha256 prefix>`` of a folder's listing (names, sizes, modification times)."""
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        if p.is_file():
            st = p.stat()
            h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return "files:" + h.hexdigest()[:16]
