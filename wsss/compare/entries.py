"""The entries of a comparison: config files, variants of the first one, or preset entries, each
resolved into one complete run configuration under ``DIR/<entry>/config.yaml``."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from wsss.config import RunConfig, check_field_name, check_yaml_fields
from wsss.errors import ConfigError
from wsss.io import atomic_write_text

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class Entry:
    """One leaderboard row: ``base`` (a YAML file, a YAML string, or None for the defaults) with
    command-line style ``overrides`` (``--section.field=value``)."""

    name: str
    base: str | None = None
    overrides: list[str] = field(default_factory=list)


def check_overrides(tokens: list[str], source: str) -> None:
    """Every ``--dotted.name[=value]`` of ``tokens`` must be a config field (error names ``source``)."""
    for token in tokens:
        if token.startswith("--"):
            check_field_name(token[2:].split("=", 1)[0], source)


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``'NAME:--a.b=1 --c=[x, y]'`` -> (NAME, ["--a.b=1", "--c=[x, y]"])."""
    name, sep, rest = text.partition(":")
    name = name.strip()
    if not sep or not NAME.match(name):
        raise ConfigError(f"--variant {text!r}: expected 'NAME:--section.field=value ...' with NAME made of "
                          "letters, digits, '_', '-' or '.'")
    tokens = shlex.split(rest)
    if not tokens:
        raise ConfigError(f"--variant {name}: no overrides after 'NAME:'")
    check_overrides(tokens, f"--variant {name}")
    return name, tokens


def build_entries(configs: list[str], variants: list[str], preset: dict[str, dict] | None = None) -> list[Entry]:
    """Entries in order: preset entries, config files (named by their stem), then variants of the first
    config (or of the defaults when no config is given)."""
    entries: list[Entry] = []
    for name, overrides in (preset or {}).items():
        entries.append(Entry(name, yaml.safe_dump(overrides, sort_keys=False) if overrides else None))
    for path in configs:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"wsss compare: config file {p} not found")
        try:
            check_yaml_fields(yaml.safe_load(p.read_text()) or {}, str(p))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML ({exc})") from exc
        entries.append(Entry(p.stem, str(p)))
    first = configs[0] if configs else None
    for text in variants:
        name, tokens = parse_variant(text)
        entries.append(Entry(name, first, tokens))
    names = [e.name for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"wsss compare: entry names {duplicates} appear more than once; name each variant "
                          "differently (config files are named by their file stem)")
    if not entries:
        raise ConfigError("wsss compare: nothing to compare; give config files, --variant or --preset")
    return entries


def resolve_entry(entry: Entry, out: Path, common: list[str]) -> tuple[RunConfig, Path]:
    """The entry's run configuration with ``out = DIR/<entry>`` (``common`` overrides applied last) and
    the file ``DIR/<entry>/config.yaml`` that holds it in full."""
    from wsss.cli import parse_run_config

    args = (["--config", entry.base] if entry.base else []) + entry.overrides + common
    args += ["--out", str(out / entry.name)]
    cfg, text = parse_run_config("pipeline", args, source=f"entry {entry.name}")
    path = out / entry.name / "config.yaml"
    atomic_write_text(path, text)
    return cfg, path
