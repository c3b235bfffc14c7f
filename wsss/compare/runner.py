"""Run the entries of a comparison, sharing equal stages, and write the leaderboard and its page.

Each entry runs ``wsss pipeline DIR/<entry>/config.yaml --stages ...`` in a child process (the
same stage functions as everywhere; a failure of one entry does not stop the others, and the
child's peak resident memory is measured on its own). Before an entry starts, every stage whose
planned fingerprint equals a stage another entry already finished is linked into the entry's
folder (relative symlinks) with its record, so the stage function finds it done and skips it.
``DIR/compare.json`` records each entry's state; a rerun skips entries that finished with the same
configuration, so a killed comparison continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from wsss.compare.entries import Entry, resolve_entry
from wsss.compare.leaderboard import build_rows, write_leaderboard
from wsss.compare.page import write_page
from wsss.config import RunConfig
from wsss.errors import ConfigError
from wsss.io import atomic_write_json
from wsss.processes import die_with_parent
from wsss.stages.cams import cams_fingerprint, own_model_method
from wsss.stages.fingerprint import Fingerprint
from wsss.stages.pipeline import PIPELINE_STAGES
from wsss.stages.pseudo import pseudo_fingerprint
from wsss.stages.pseudo_rw import pseudo_rw_fingerprint
from wsss.stages.records import read_stages, stage_outputs, update_record
from wsss.stages.train_aff import train_aff_fingerprint
from wsss.stages.train_cls import train_cls_fingerprint
from wsss.stages.train_seg import masks_name, train_seg_fingerprint

log = logging.getLogger("wsss")

STATE_FILE = "compare.json"


def planned_fingerprints(cfg: RunConfig, stages: Sequence[str]) -> dict[str, Fingerprint]:
    """The fingerprint each selected stage of ``cfg`` will have, computed before anything runs. A CAM
    method with its own model (the CLIP methods) plans no classifier: the pipeline trains none, and a
    classifier shared from another entry would put that entry's mAP and seconds in this row."""
    plan: dict[str, Fingerprint] = {}
    cls = train_cls_fingerprint(cfg)
    cams = cams_fingerprint(cfg, train_cls=cls.digest)
    pseudo = pseudo_fingerprint(cfg, cams=cams.digest)
    aff = train_aff_fingerprint(cfg, cams=cams.digest)
    walk = pseudo_rw_fingerprint(cfg, cams=cams.digest, train_aff=aff.digest)
    for name, fp in (("train-cls", cls), ("cams", cams), ("pseudo", pseudo)):
        if name == "train-cls" and own_model_method(cfg) is not None:
            continue
        if name in stages:
            plan[name.replace("-", "_")] = fp
    if cfg.affinity.enabled:
        if "train-aff" in stages:
            plan["train_aff"] = aff
        if "pseudo" in stages:
            plan["pseudo_rw"] = walk
    if "train-seg" in stages:
        masks = [cfg.segmenter.masks] + (["gt"] if cfg.segmenter.fully_supervised else [])
        for m in dict.fromkeys(masks):
            plan[f"train_seg_{masks_name(m)}"] = train_seg_fingerprint(cfg, m, pseudo=pseudo.digest,
                                                                      pseudo_rw=walk.digest)
    return plan


def _outputs_present(out: Path, stage: str) -> bool:
    return all((out / rel).exists() for rel in stage_outputs(stage)[:1])


def share_finished_stages(cfg: RunConfig, plan: dict[str, Fingerprint], others: list[RunConfig]) -> list[str]:
    """Link into ``cfg.out`` every planned stage another entry finished with the same fingerprint."""
    out = cfg.out_dir
    own = read_stages(out)
    shared = []
    for stage, fp in plan.items():
        mine = own.get(stage, {})
        if mine.get("fingerprint") == fp.digest and mine.get("complete"):
            continue
        if mine or any((out / rel).exists() for rel in stage_outputs(stage)):
            continue
        for other in others:
            record = read_stages(other.out_dir).get(stage, {})
            if record.get("fingerprint") == fp.digest and record.get("complete") and \
                    _outputs_present(other.out_dir, stage):
                for rel in stage_outputs(stage):
                    source = (other.out_dir / rel).resolve()
                    if source.exists():
                        target = out / rel
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.symlink_to(os.path.relpath(source, target.parent))
                owner = record.get("shared_from") or other.out_dir.name
                update_record(out, stage, {**record, "shared_from": owner})
                shared.append(stage)
                break
    return shared


def run_entry(config_file: Path, stages: Sequence[str]) -> tuple[int, float, float]:
    """Run one entry's pipeline in a child process: (exit code, wall seconds, peak RSS in MiB)."""
    cmd = [sys.executable, "-m", "wsss.cli", "pipeline", "--config", str(config_file), "--stages", ",".join(stages)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, preexec_fn=partial(die_with_parent, os.getpid()) if os.name == "posix" else None)
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, round(time.perf_counter() - start, 2), round(usage.ru_maxrss / 1024, 1)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def run_compare(entries: list[Entry], out: str | Path, stages: Sequence[str] = PIPELINE_STAGES,
                common: Sequence[str] = ()) -> dict[str, Any]:
    """Run ``entries`` into ``out/<entry>/``, then write ``out/leaderboard.{md,csv,json,png}`` and
    ``out/index.html``; returns the leaderboard (with its markdown). Entries that fail are listed
    with their status; :class:`ConfigError` is raised at the end when any did."""
    out = Path(out)
    unknown = [s for s in stages if s not in PIPELINE_STAGES]
    if unknown:
        raise ConfigError(f"--stages: unknown {unknown}; choose from {', '.join(PIPELINE_STAGES)}")
    stages = [s for s in PIPELINE_STAGES if s in stages]
    out.mkdir(parents=True, exist_ok=True)
    resolved = [(e, *resolve_entry(e, out, list(common))) for e in entries]
    _check_synthetic_roots([(e.name, cfg) for e, cfg, _ in resolved])
    _warn_on_different_data([(e.name, cfg) for e, cfg, _ in resolved])
    state_path = out / STATE_FILE
    state = _read_state(state_path)
    started = time.perf_counter()
    for i, (entry, cfg, config_file) in enumerate(resolved):
        digest = _digest(config_file)
        previous = state.get(entry.name, {})
        if previous.get("status") == "done" and previous.get("config") == digest and \
                previous.get("stages") == list(stages):
            log.info("compare: %s finished earlier with the same configuration: not rerun", entry.name)
            continue
        others = [c for j, (_, c, _) in enumerate(resolved) if j != i]
        shared = share_finished_stages(cfg, planned_fingerprints(cfg, stages), others)
        if shared:
            log.info("compare: %s shares %s with earlier entries", entry.name, ", ".join(shared))
        log.info("compare: running %s (%d of %d) into %s", entry.name, i + 1, len(resolved), cfg.out_dir)
        code, seconds, rss = run_entry(config_file, stages)
        state[entry.name] = {"status": "done" if code == 0 else f"failed (exit {code})", "config": digest,
                             "stages": list(stages), "wall_seconds": seconds, "peak_rss_mib": rss}
        atomic_write_json(state_path, state)
    rows = build_rows([{"name": e.name, "records": read_stages(cfg.out_dir), "masks": masks_name(cfg.segmenter.masks),
                        "peak_rss_mib": state.get(e.name, {}).get("peak_rss_mib"),
                        "status": state.get(e.name, {}).get("status", "not run")} for e, cfg, _ in resolved])
    board = write_leaderboard(out, rows)
    board["page"] = str(write_page(out, board, [(e.name, cfg) for e, cfg, _ in resolved]))
    board["wall_seconds"] = round(time.perf_counter() - started, 2)
    failed = [r["entry"] for r in rows if r["status"] != "done"]
    print(board["markdown"])
    print(f"leaderboard: {out / 'leaderboard.md'}  page: {board['page']}  ({board['wall_seconds']:.0f} s)")
    if failed:
        raise ConfigError(f"wsss compare: entries {failed} did not finish (see their output above); "
                          "rerun the same command to retry them, the finished ones are not rerun")
    return board


def _read_state(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _check_synthetic_roots(entries: list[tuple[str, RunConfig]]) -> None:
    """Two entries may not generate different synthetic sets into one root: the second generation
    replaces the first's images, under its finished stages and under the page's overlays."""
    owner: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, cfg in entries:
        if cfg.data.name != "synthetic":
            continue
        root = str(Path(cfg.data.root).resolve())
        if root in owner and owner[root][1] != cfg.data.kwargs:
            raise ConfigError(f"wsss compare: entries {owner[root][0]} and {name} generate different synthetic "
                              f"sets (data.kwargs {owner[root][1]} vs {cfg.data.kwargs}) into one data.root "
                              f"{cfg.data.root}; give {name} its own, e.g. --variant '{name}:... "
                              f"--data.root={cfg.data.root}-{name}'")
        owner.setdefault(root, (name, cfg.data.kwargs))


def _warn_on_different_data(entries: list[tuple[str, RunConfig]]) -> None:
    first_name, first = entries[0]
    for name, cfg in entries[1:]:
        if cfg.seed != first.seed or cfg.data != first.data:
            log.warning("compare: entry %s uses another seed or data section than %s; its row is not a "
                        "like-for-like comparison", name, first_name)
