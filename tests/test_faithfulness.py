"""Faithfulness metrics on cases with a known answer (spec cam_methods.md section 4)."""

import pytest
import torch
from torch import nn

from wsss.eval.faithfulness import (
    auc,
    average_drop,
    deletion_insertion_curves,
    faithfulness,
    increase_in_confidence,
)


def test_average_drop_and_increase_in_confidence_tiny_case():
    y, o = torch.tensor([0.8, 0.5]), torch.tensor([0.4, 0.6])
    assert average_drop(y, o) == pytest.approx(25.0)
    assert increase_in_confidence(y, o) == pytest.approx(50.0)


def linear_score(x):
    """f = sum w_i x_i over 4 pixels of one channel (a 2x2 image)."""
    w = torch.tensor([0.4, 0.3, 0.2, 0.1])
    return (x.flatten(1) * w).sum(1)


def test_deletion_and_insertion_tiny_case_and_reversed_saliency():
    image = torch.ones(1, 2, 2)
    saliency = torch.tensor([[0.4, 0.3], [0.2, 0.1]])
    d, i = deletion_insertion_curves(linear_score, image, saliency, 1, substrate_insertion="zero")
    torch.testing.assert_close(d, torch.tensor([1.0, 0.6, 0.3, 0.1, 0.0]))
    torch.testing.assert_close(i, torch.tensor([0.0, 0.4, 0.7, 0.9, 1.0]))
    assert auc(d) == pytest.approx(0.375) and auc(i) == pytest.approx(0.625)
    d2, i2 = deletion_insertion_curves(linear_score, image, saliency.flip(0).flip(1), 1, substrate_insertion="zero")
    assert auc(d2) == pytest.approx(0.625) and auc(i2) == pytest.approx(0.375)


def test_ties_are_broken_by_flat_index():
    image = torch.ones(1, 2, 2)
    d, _ = deletion_insertion_curves(linear_score, image, torch.zeros(2, 2), 1, substrate_insertion="zero")
    torch.testing.assert_close(d, torch.tensor([1.0, 0.6, 0.3, 0.1, 0.0]))


class Detector(nn.Module):
    """Class 0 scores the mean brightness of the top-left quadrant; class 1 of the bottom-right."""

    def forward(self, x):
        tl = x[:, :, :4, :4].mean((1, 2, 3))
        br = x[:, :, 4:, 4:].mean((1, 2, 3))
        return torch.stack([tl, br], 1) * 4 - 2


def test_a_faithful_map_beats_a_reversed_one():
    image = torch.zeros(1, 3, 8, 8)
    image[..., :4, :4] = 1.0  # the blurred insertion substrate spreads this light: the detector sees less
    good = torch.zeros(1, 1, 8, 8)
    good[..., :4, :4] = 1.0
    targets = torch.tensor([[0]])
    faithful = faithfulness(Detector(), image, good, targets, pixels_per_step=4)
    reversed_ = faithfulness(Detector(), image, 1 - good, targets, pixels_per_step=4)
    assert faithful["deletion_auc"] < reversed_["deletion_auc"]
    assert faithful["insertion_auc"] > reversed_["insertion_auc"]
    assert faithful["average_drop"] == pytest.approx(0.0) and reversed_["average_drop"] > 50
