"""Stage records in ``OUT/stages.json``: what each stage wrote, from which settings (its
fingerprint), whether it finished; skipping finished stages, refusing stale ones, ``--overwrite``."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wsss.errors import ConfigError, StaleOutputsError
from wsss.io import atomic_write_json
from wsss.stages.fingerprint import Fingerprint, file_digest, folder_digest

log = logging.getLogger("wsss")

STAGES_FILE = "stages.json"


def read_stages(out: Path) -> dict[str, Any]:
    p = out / STAGES_FILE
    return json.loads(p.read_text()) if p.is_file() else {}


STAGE_OUTPUTS: dict[str, list[str]] = {
    "train_cls": ["classifier"],
    "cams": ["cams"],
    "pseudo": ["pseudo", "pseudo_crf", "pseudo_par", "eval/seed_cam", "eval/pseudo", "eval/pseudo_crf",
               "eval/pseudo_par"],
    "train_aff": ["affinity", "ir_labels"],
    "train_lvc": ["lvc"],
    "pseudo_rw": ["pseudo_rw", "cams_rw", "eval/cams_rw", "eval/pseudo_rw"],
    "report": ["report"],
}


def stage_outputs(name: str) -> list[str]:
    """Paths (relative to OUT) a stage writes; ``train_seg_<masks>`` writes ``segmenter_<masks>``."""
    if name.startswith("train_seg_"):
        masks = name[len("train_seg_"):]
        return [f"segmenter_{masks}", f"eval/seg_{masks}"]
    return STAGE_OUTPUTS[name]


# the files that make a stage's main output folder count as results (logs of a failed start do not)
RESULT_FILES = {"train_cls": "*.ckpt", "cams": "*.npz", "pseudo": "*.png", "train_aff": "*.ckpt", "pseudo_rw": "*.png",
                "train_lvc": "*.ckpt", "train_seg": "*.ckpt", "report": "*"}


def outputs_exist(out: Path, name: str) -> bool:
    """True when the stage's main output folder holds result files."""
    main = out / stage_outputs(name)[0]
    pattern = RESULT_FILES.get("train_seg" if name.startswith("train_seg_") else name, "*")
    return main.is_dir() and any(p.is_file() for p in main.glob(pattern))


def stale_error(out: Path, name: str, changes: list[str]) -> StaleOutputsError:
    listing = "\n  ".join(changes)
    return StaleOutputsError(
        f"{out / stage_outputs(name)[0]} was made with other settings than this run's ({out / STAGES_FILE}, "
        f"stage {name}):\n  {listing}\nTo keep those outputs, run with a new --out; to redo the stage, add "
        f"--overwrite {'train-cls' if name == 'train_cls' else name} (it deletes "
        "the stage's outputs and those of the stages made from them)."
    )


def check_output_folder(out: Path, name: str) -> None:
    """``out`` must be (or become) a writable folder, and the stage's output paths folders."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; choose a folder for the run's outputs")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".tmp-write-probe.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write there ({exc.strerror or exc}); choose a writable folder") from exc
    for rel in stage_outputs(name):
        path = out
        for part in Path(rel).parts:
            path = path / part
            if path.exists() and not path.is_dir():
                raise ConfigError(f"{path} is a file where stage {name} writes a folder; move it away or "
                                  "choose another --out")


def finished_record(out: Path, name: str, fingerprint: Fingerprint,
                    invalid_outputs: Callable[[], list[Path]] | None = None) -> dict[str, Any] | None:
    """The record of stage ``name`` when its outputs are complete and were made from ``fingerprint``
    (the caller skips the stage), None when the stage is to run (or resume).

    ``invalid_outputs`` lists output files that are missing, truncated or corrupt; when it finds any,
    they are deleted and the stage runs again (it remakes only what is missing).

    Raises :class:`StaleOutputsError` when its outputs were made from other settings, or when they
    exist with no record of how they were made; :class:`ConfigError` when ``out`` is not a writable
    folder."""
    check_output_folder(out, name)
    record = read_stages(out).get(name)
    if record is None or "fingerprint" not in record:
        if outputs_exist(out, name):
            raise stale_error(out, name, ["no record of the settings these files were made with "
                                          "(made by an older wsss, or copied in)"])
        return None
    if record["fingerprint"] != fingerprint.digest:
        if not outputs_exist(out, name):
            return None  # an attempt with other settings that left no results: nothing to protect
        raise stale_error(out, name, fingerprint.changes(record))
    if record.get("complete") and outputs_exist(out, name):
        bad = invalid_outputs() if invalid_outputs is not None else []
        if bad:
            log.warning("stage %s: %d output files are missing or invalid (e.g. %s): remaking them", name, len(bad),
                        bad[0])
            for path in bad:
                path.unlink(missing_ok=True)
            return None
        log.info("stage %s: outputs of an earlier run with the same settings are complete (made in %s s): "
                 "skipped", name, record.get("seconds"))
        update_record(out, name, {"last_run": "skipped"})
        return record
    return None


def update_record(out: Path, name: str, values: dict[str, Any]) -> dict[str, Any]:
    stages = read_stages(out)
    stages[name] = {**stages.get(name, {}), **values}
    atomic_write_json(out / STAGES_FILE, stages)
    return stages[name]


def recorded_input(out: Path, name: str, path: Path) -> str:
    """Fingerprint of an input stage: its recorded fingerprint, else a digest of the file or folder
    ``path`` when that was made by something else (``missing`` when it does not exist)."""
    record = read_stages(out).get(name)
    if record is not None and record.get("complete") and "fingerprint" in record:
        return record["fingerprint"]
    if path.is_file():
        return file_digest(path)
    return folder_digest(path) if path.is_dir() else "missing"


def downstream_stages(out: Path, name: str) -> list[str]:
    """``name`` and every recorded stage made (directly or not) from its outputs."""
    stages = read_stages(out)
    found = [name]
    changed = True
    while changed:
        changed = False
        for other, record in stages.items():
            inputs = record.get("made_from", {}).get("inputs", {})
            if other not in found and any(i in found for i in inputs):
                found.append(other)
                changed = True
    return found


def overwrite_stages(out: Path, names: list[str]) -> list[str]:
    """Delete the outputs and records of the named stages and of every stage made from them.

    ``train_seg`` stands for every ``train_seg_<masks>`` stage. Outputs shared with another run
    (``wsss compare`` links) are unlinked, never deleted at their source."""
    stages = read_stages(out)
    targets: list[str] = []
    for name in names:
        name = name.replace("-", "_")
        if name == "train_seg":
            matches = [s for s in stages if s.startswith("train_seg_")]
        elif name in STAGE_OUTPUTS or name.startswith("train_seg_"):
            matches = [name]
        else:
            raise ConfigError(f"--overwrite: unknown stage {name!r}; choose from train-cls, cams, pseudo, "
                              "train-aff, train-lvc, pseudo-rw, train-seg (or train_seg_<masks>)")
        for match in matches:
            targets += [s for s in downstream_stages(out, match) if s not in targets]
    for name in targets:
        for rel in stage_outputs(name):
            path = out / rel
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)
        stages.pop(name, None)
    if targets:
        atomic_write_json(out / STAGES_FILE, stages)
        log.info("overwrite: removed the outputs of %s", ", ".join(targets))
    return targets


@contextmanager
def stage(out: Path, name: str, fingerprint: Fingerprint | None = None) -> Iterator[dict[str, Any]]:
    """Time a stage and record it in ``OUT/stages.json``; the yielded dict collects its results.

    With a ``fingerprint`` the record is written first as incomplete, so that an interrupted stage
    is known (and resumed only with the same settings), and completed at the end."""
    record: dict[str, Any] = {}
    start = time.perf_counter()
    log.info("stage %s ...", name)
    base = fingerprint.record() if fingerprint is not None else {}
    if fingerprint is not None:
        stages = read_stages(out)
        stages[name] = {**base, "complete": False}
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / STAGES_FILE, stages)
    yield record
    record["seconds"] = round(time.perf_counter() - start, 2)
    stages = read_stages(out)
    stages[name] = {**base, **record, "complete": True, "last_run": "ran"}
    atomic_write_json(out / STAGES_FILE, stages)
    log.info("stage %s done in %.1f s", name, record["seconds"])
