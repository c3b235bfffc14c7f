"""The segmenter stage warns when the segmenter ends below the masks it learned from."""

import logging

import numpy as np
from PIL import Image

from wsss.config import RunConfig
from wsss.io import atomic_write_json
from wsss.stages.train_seg import warn_if_undertrained


def _folder(root, n=5):
    (root / "images").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / f"{i}.png")
    (root / "classes.txt").write_text("background\nthing\n")
    (root / "labels.csv").write_text("image,labels\n" + "".join(f"{i},thing\n" for i in range(n)))
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("0\n1\n2\n3\n")
    (root / "splits" / "val.txt").write_text("4\n")


def test_a_segmenter_below_its_training_masks_is_reported_with_its_epochs(tmp_path, caplog):
    _folder(tmp_path / "data")
    cfg = RunConfig(out=str(tmp_path / "out"))
    cfg.data.name, cfg.data.root = "folder", str(tmp_path / "data")
    cfg.segmenter.max_steps, cfg.segmenter.batch_size = 6, 2
    atomic_write_json(cfg.out_dir / "stages.json", {"pseudo": {"pseudo_crf_miou": 40.0},
                                                    "pseudo_rw": {"pseudo_rw_miou": 30.0}})
    with caplog.at_level(logging.WARNING, logger="wsss"):
        message = warn_if_undertrained(cfg, "pseudo_crf", 35.0)
    assert message is not None and "undertrained" in caplog.text
    assert "35.00" in message and "40.00" in message and "3.0 epochs of 4 images" in message
    assert warn_if_undertrained(cfg, "pseudo_rw", 31.0) is None
    assert warn_if_undertrained(cfg, "gt", 1.0) is None
