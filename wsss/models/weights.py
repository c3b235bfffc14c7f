"""Pretrained weights from local files only (nothing is downloaded at run time)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from wsss.errors import ConfigError

log = logging.getLogger("wsss")

WEIGHTS_HOME = Path("~/.cache/wsss/weights").expanduser()


def missing_weights_error(model_name: str, timm_name: str, path: Path | None = None) -> ConfigError:
    expected = path or WEIGHTS_HOME / f"{model_name}.pth"
    return ConfigError(
        f"pretrained weights for backbone {model_name!r} (timm model {timm_name!r}) not found at {expected}. "
        "wsss never downloads at run time: get the ImageNet weights of that timm model (e.g. from the "
        f"Hugging Face hub 'timm/{timm_name}' on a machine with internet), save the file there or set "
        "`pretrained: /path/to/file.(pth|safetensors)` in the config, or use `pretrained: false`."
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.pth/.pt/.bin`` (plain, timm or Lightning checkpoint) or ``.safetensors``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pretrained weight file {path} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"pretrained weight file {path}: not a weight file wsss can read ({type(exc).__name__}; "
                          "only tensors are loaded, never pickled code); point `pretrained` at a .pth/.pt/.bin "
                          "state dict or a .safetensors file") from exc
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ConfigError(f"{path}: not a state dict (got {type(obj).__name__})")
    return obj


def load_into(module: nn.Module, state: dict[str, torch.Tensor], source: str,
              strip_prefixes: tuple[str, ...] = ("module.", "model.", "backbone.", "encoder.")) -> None:
    """Load ``state`` non-strictly after stripping wrapper prefixes; log what did not match.

    Keys of classifier heads are expected to be unused; a load that matches no key at all is an error.
    """
    own = module.state_dict()
    cleaned = {}
    for key, value in state.items():
        for prefix in strip_prefixes:
            if key.startswith(prefix) and key[len(prefix):] in own:
                key = key[len(prefix):]
                break
        cleaned[key] = value
    shape_mismatch = [k for k, v in cleaned.items() if k in own and own[k].shape != v.shape]
    if shape_mismatch:
        k = shape_mismatch[0]
        raise ConfigError(f"{source}: tensor {k} has shape {tuple(cleaned[k].shape)}, the model expects "
                          f"{tuple(own[k].shape)} (wrong model for this file?)")
    result = module.load_state_dict(cleaned, strict=False)
    loaded = len(own) - len(result.missing_keys)
    if loaded == 0:
        raise ConfigError(f"{source}: no tensor matches the model (wrong file?)")
    if result.missing_keys:
        log.warning("%s: %d model tensors not in the file, e.g. %s", source, len(result.missing_keys),
                    result.missing_keys[:3])
    if result.unexpected_keys:
        log.info("%s: %d file tensors unused (heads), e.g. %s", source, len(result.unexpected_keys),
                 result.unexpected_keys[:3])


def resolve_weight_file(model_name: str, timm_name: str, pretrained: bool | str) -> Path | None:
    """The local file ``pretrained`` asks for (None for ``False``); a missing file fails at once.

    ``True`` means ``~/.cache/wsss/weights/<model_name>.(pth|safetensors)``; a string is a path.
    """
    if pretrained is False or pretrained is None:
        return None
    if pretrained is True:
        for suffix in (".pth", ".safetensors"):
            candidate = WEIGHTS_HOME / f"{model_name}{suffix}"
            if candidate.is_file():
                return candidate
        raise missing_weights_error(model_name, timm_name)
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise missing_weights_error(model_name, timm_name, path)
    return path


def read_checkpoint(path: str | Path, kind: str) -> dict:
    """A wsss Lightning checkpoint (``weights_only`` load): a dict with ``hyper_parameters.model_config``
    and ``state_dict``. A missing file, a file that is not a checkpoint or one of another program
    raises :class:`ConfigError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{kind} checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"{path}: not a readable {kind} checkpoint ({type(exc).__name__}; only tensors are "
                          "loaded, never pickled code); retrain it or pass the right file") from exc
    try:
        ckpt["hyper_parameters"]["model_config"]
        ckpt["state_dict"].items()
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: not a wsss {kind} checkpoint (no hyper_parameters.model_config "
                          "or state_dict)") from exc
    return ckpt


def checkpoint_file_ok(path: Path) -> bool:
    """Whether ``path`` is a complete checkpoint file (read lazily: nothing but its index is loaded)."""
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    return True


def read_module_checkpoint(path: str | Path, kind: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(model config, model state dict) of a wsss Lightning checkpoint (``weights_only`` load).

    The modules store the network's constructor arguments as ``hyper_parameters.model_config`` and
    its weights under the ``model.`` prefix; refiner or optimiser state is left out.
    """
    ckpt = read_checkpoint(path, kind)
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    return ckpt["hyper_parameters"]["model_config"], state
