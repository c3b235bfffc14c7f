import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex

from wsss.eval.miou import ConfusionMatrix, miou_table


def test_streaming_miou_matches_torchmetrics():
    rng = np.random.default_rng(0)
    ours = ConfusionMatrix(6)
    jaccard = MulticlassJaccardIndex(num_classes=6, average="none", ignore_index=255)
    confusion = MulticlassConfusionMatrix(num_classes=6, ignore_index=255)
    for _ in range(5):
        target = rng.integers(0, 6, (3, 17, 23))
        target[rng.random(target.shape) < 0.1] = 255
        pred = np.where(rng.random(target.shape) < 0.6, np.where(target == 255, 0, target), rng.integers(0, 6, target.shape))
        ours.update(pred, target)
        jaccard.update(torch.from_numpy(pred), torch.from_numpy(target))
        confusion.update(torch.from_numpy(pred), torch.from_numpy(target))
    np.testing.assert_array_equal(ours.matrix, confusion.compute().numpy())
    result = ours.compute()
    np.testing.assert_allclose(result["iou"], jaccard.compute().numpy(), rtol=1e-6)
    assert result["miou"] == pytest.approx(100 * float(jaccard.compute().mean()), rel=1e-6)


def test_absent_classes_are_excluded_and_ignore_is_dropped():
    cm = ConfusionMatrix(4)
    cm.update(np.array([0, 1, 1, 3]), np.array([0, 1, 255, 1]))
    result = cm.compute(["bg", "a", "b", "c"])
    assert result["iou"] == [1.0, 0.5, None, 0.0]
    assert result["miou"] == pytest.approx(100 * 1.5 / 3)
    assert result["pixels"] == 3
    assert "mIoU" in miou_table(result) and "b" in miou_table(result)


def test_out_of_range_labels_raise():
    with pytest.raises(ValueError):
        ConfusionMatrix(3).update(np.array([5]), np.array([1]))
