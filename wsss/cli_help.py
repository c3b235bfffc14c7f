"""``wsss <command> --help``: the flags of the command and only the config fields its stage reads.

The parser accepts every field of :class:`wsss.config.RunConfig` on every command (one config file
serves all stages); the help lists just the sections a command uses, with defaults and the field
descriptions from the config dataclasses' docstrings.
"""

from __future__ import annotations

import dataclasses
import textwrap

import docstring_parser

from wsss.config import RunConfig
from wsss.stages.fingerprint import AFFINITY_WALK

COMMAND_SECTIONS = {
    "train-cls": ["data", "trainer", "classifier"],
    "cams": ["data", "trainer", "cams", "clip"],
    "train-aff": ["data", "trainer", "affinity"],
    "train-lvc": ["data", "trainer", "clip", "lvc"],
    "pseudo": ["data", "pseudo", "affinity"],
    "train-seg": ["data", "trainer", "segmenter", "pseudo"],
    "eval": ["data", "pseudo"],
    "predict": ["data", "segmenter", "pseudo"],
    "explain": ["data", "classifier", "cams"],
}
# Sections a command reads only in part: the random walk of ``pseudo`` reads the walk's settings of
# ``affinity``, not how the boundary network is trained.
SECTION_FIELDS = {("pseudo", "affinity"): ("enabled", *(name.split(".")[1] for name in AFFINITY_WALK))}
ALL_SECTIONS = ["data", "trainer", "classifier", "cams", "clip", "affinity", "lvc", "pseudo", "segmenter"]
TOP_LEVEL = {"train-cls": ["out", "seed", "progress"], "train-aff": ["out", "seed", "progress"], "train-lvc": ["out", "seed", "progress"], "cams": ["out", "progress"], "pseudo": ["out", "progress"],
             "train-seg": ["out", "seed", "progress"], "eval": ["out", "progress"], "predict": ["out", "progress"],
             "explain": ["out", "progress"]}


def _descriptions(cls: type) -> dict[str, str]:
    return {p.arg_name: " ".join((p.description or "").split()) for p in docstring_parser.parse(cls.__doc__ or "").params}


def _entry(flag: str, default, text: str, indent: int) -> list[str]:
    head = " " * indent + f"{flag} (default: {default!r})"
    body = textwrap.wrap(text, 100 - indent - 4) or [""]
    return [head] + [" " * (indent + 4) + line for line in body if line]


def command_help(command: str, description: str, flags: list[tuple[str, str]]) -> str:
    """The help text of ``command``: usage, its own ``flags`` (name, text) and its config fields."""
    defaults = RunConfig()
    lines = [f"usage: wsss {command} [CONFIG.yaml] [--section.field VALUE ...]", "", description, "",
             "options:", "  -h, --help            this help", "  -c, --config FILE     YAML run configuration "
             "(or give the file as the first argument)"]
    for name, text in flags:
        wrapped = textwrap.wrap(text, 76) or [""]
        lines.append(f"  {name:<21} {wrapped[0]}")
        lines += [" " * 24 + line for line in wrapped[1:]]
    lines += ["", "config fields this command reads (any other field of a config file is accepted and ignored):"]
    top = _descriptions(RunConfig)
    for name in TOP_LEVEL.get(command, ["out", "seed", "report", "progress"]):
        lines += _entry(f"--{name}", getattr(defaults, name), top.get(name, ""), 2)
    for section in COMMAND_SECTIONS.get(command, ALL_SECTIONS):
        value = getattr(defaults, section)
        texts = _descriptions(type(value))
        lines += ["", f"  {section}: {top.get(section, '')}"]
        only = SECTION_FIELDS.get((command, section))
        for f in dataclasses.fields(value):
            if only is not None and f.name not in only:
                continue
            lines += _entry(f"--{section}.{f.name}", getattr(value, f.name), texts.get(f.name, ""), 4)
    return "\n".join(lines) + "\n"
