"""Every ``trainer.precision`` that a shipped config names trains on the CPU: two classifier steps (CNN,
and ViT with ToCo) and two segmenter steps, with finite losses, finite float32 weights in the checkpoint
and the trainer really in that precision."""

from pathlib import Path

import pytest
import torch
import yaml
from helpers import tiny_run_config

from wsss.config import RunConfig
from wsss.models.weights import read_checkpoint
from wsss.stages.train_cls import classifier_ckpt, run_train_cls
from wsss.stages.train_seg import run_train_seg

CONFIGS = sorted((Path(__file__).parents[1] / "configs").rglob("*.yaml"))


def config_precisions() -> list[str]:
    found = {RunConfig().trainer.precision}
    for path in CONFIGS:
        trainer = (yaml.safe_load(path.read_text()) or {}).get("trainer") or {}
        if "precision" in trainer:
            found.add(str(trainer["precision"]))
    return sorted(found)


def test_the_gpu_configs_name_a_mixed_precision():
    assert "bf16-mixed" in config_precisions()


def tiny(tmp_path, precision: str) -> RunConfig:
    cfg = tiny_run_config(tmp_path / "run", tmp_path / "data")
    cfg.trainer.precision = precision
    return cfg


@pytest.mark.parametrize("precision", config_precisions())
@pytest.mark.parametrize("family", ["cnn", "vit_toco"])
def test_a_classifier_step_in_each_config_precision(tmp_path, trainers, precision, family):
    cfg = tiny(tmp_path, precision)
    if family == "vit_toco":
        cfg.classifier.backbone = "vit_custom"
        cfg.classifier.backbone_kwargs = {"depth": 4, "embed_dim": 16, "num_heads": 2}
        cfg.classifier.pooling, cfg.classifier.aux_layer, cfg.classifier.crop_size = "gmp", -2, 64
        cfg.classifier.refiners = [{"name": "toco", "proj_hidden_dim": 16, "proj_bottleneck_dim": 8, "proj_dim": 12,
                                    "decoder_channels": 8, "n_local": 2, "local_size": 32, "cam_scales": [1.0],
                                    "seg_warmup": 0}]
    run_train_cls(cfg)
    trainer = trainers[0]
    assert trainer.precision == precision and trainer.global_step == 2
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    state = read_checkpoint(classifier_ckpt(cfg), "classifier")["state_dict"]
    floats = {k: v for k, v in state.items() if v.is_floating_point()}
    assert all(v.dtype == torch.float32 for v in floats.values())
    assert all(torch.isfinite(v).all() for v in floats.values())


@pytest.mark.parametrize("precision", config_precisions())
def test_a_segmenter_step_in_each_config_precision(tmp_path, trainers, precision):
    cfg = tiny(tmp_path, precision)
    metrics = run_train_seg(cfg, "gt")
    trainer = trainers[0]
    assert trainer.precision == precision and trainer.global_step == 2
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert 0.0 <= metrics["miou"] <= 100.0
