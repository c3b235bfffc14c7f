"""ExCEL and CLIP-ES as training-free CAM methods: ``wsss cams`` with a random tiny open_clip model,
then ``wsss pseudo``, on the built-in data (the masks' quality means nothing without CLIP weights;
the path is what is tested), plus the missing-weights error and the stage fingerprint."""

import json
import os

import pytest

from wsss.cli import main
from wsss.errors import ConfigError

os.environ["HF_HUB_OFFLINE"] = "1"

TINY_CLIP = ("{embed_dim: 32, vision_cfg: {image_size: 32, layers: 6, width: 64, head_width: 16, patch_size: 8}, "
             "text_cfg: {context_length: 77, vocab_size: 49408, width: 32, heads: 4, layers: 2}}")
COMMON = ["--data.kwargs", "{n_train: 4, n_val: 2, image_size: 48}", "--clip.model_cfg", TINY_CLIP,
          "--clip.n_clusters", "8", "--clip.par_iter", "3", "--cams.scales", "[1.0]", "--pseudo.workers", "1",
          "--pseudo.crf", "false", "--pseudo.bg_threshold", "0.5", "--trainer.accelerator", "cpu",
          "--trainer.devices", "1", "--progress", "false", "--data.num_workers", "0"]


@pytest.mark.parametrize("method", ["excel", "clip_es"])
def test_cams_then_pseudo_without_training(tmp_path, method):
    argv = ["--out", str(tmp_path / "out"), "--data.root", str(tmp_path / "synthetic"), "--cams.method", method,
            *COMMON]
    assert main(["cams", *argv]) == 0
    cams = sorted((tmp_path / "out" / "cams").glob("*.npz"))
    assert len(cams) == 4
    assert not (tmp_path / "out" / "classifier").exists()
    assert main(["pseudo", *argv]) == 0
    masks = list((tmp_path / "out" / "pseudo").glob("*.png"))
    assert len(masks) == 4
    records = json.loads((tmp_path / "out" / "stages.json").read_text())
    assert records["cams"]["made_from"]["inputs"]["model"].startswith("clip:")
    assert 0 <= records["pseudo"]["pseudo_miou"] <= 100
    assert main(["cams", *argv]) == 0, "a rerun with the same settings reuses the finished stage"


def test_missing_weight_file_is_named(tmp_path):
    from wsss.refiners.excel.clip_model import build_open_clip

    with pytest.raises(ConfigError, match="nowhere/ViT-B-16.bin"):
        build_open_clip("ViT-B-16-quickgelu", str(tmp_path / "nowhere" / "ViT-B-16.bin"))
    with pytest.raises(ConfigError, match="clip.weights is not set"):
        build_open_clip("ViT-B-16-quickgelu", None)


def test_train_lvc_stage_trains_and_skips_when_done(tmp_path):
    argv = ["train-lvc", "--out", str(tmp_path / "out"), "--data.root", str(tmp_path / "synthetic"), *COMMON,
            "--lvc.max_steps", "1", "--lvc.shift_start", "0", "--lvc.warmup_steps", "1", "--lvc.batch_size", "2",
            "--lvc.crop_size", "32", "--lvc.dim", "32", "--lvc.decoder_depth", "1", "--lvc.decoder_heads", "4",
            "--trainer.loggers", "[csv]"]
    assert main(argv) == 0
    import torch

    ckpt = torch.load(tmp_path / "out" / "lvc" / "lvc.ckpt", weights_only=False)
    assert ckpt["state_dict"] and not any(k.startswith("clip_model.") for k in ckpt["state_dict"])
    assert main(argv) == 0
