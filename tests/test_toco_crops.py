"""ToCo view construction: local-crop centres and flags (A.5, Q11), seeded reproducibility."""

import pytest
import torch

from wsss.errors import ConfigError
from wsss.refiners.toco.crops import colour_jitter, random_resized_crop, sample_local_crops


def _coord_images(b, h, w):
    """Images whose channels hold (row, col, 0), so a crop reveals where it came from."""
    rows = torch.arange(h).float()[:, None].expand(h, w)
    cols = torch.arange(w).float()[None, :].expand(h, w)
    return torch.stack([rows, cols, torch.zeros(h, w)])[None].repeat(b, 1, 1, 1)


def test_crops_avoid_confident_foreground_centres():
    h = w = 32
    roi = torch.full((1, h, w), 2)
    roi[0, 20:, 20:] = 1  # the only non-foreground area
    crops, _ = sample_local_crops(_coord_images(1, h, w), roi, n_local=4, size=8, generator=torch.Generator().manual_seed(0))
    assert crops.shape == (1, 4, 3, 8, 8)
    centre_rows = crops[0, :, 0, 4, 4]
    centre_cols = crops[0, :, 1, 4, 4]
    assert (centre_rows >= 20).all() and (centre_cols >= 20).all()
    # crops are contiguous windows of the source
    assert torch.equal(crops[0, 0, 0, :, 0] - crops[0, 0, 0, 0, 0], torch.arange(8).float())


def test_crops_fall_back_to_anywhere_when_too_few_candidates():
    roi = torch.full((1, 32, 32), 2)
    roi[0, 16, 16] = 0
    crops, _ = sample_local_crops(_coord_images(1, 32, 32), roi, 3, 8, torch.Generator().manual_seed(1))
    assert crops.shape[1] == 3
    assert len({(int(c[0, 4, 4]), int(c[1, 4, 4])) for c in crops[0]}) == 3


def test_flag_rule_on_fixed_windows():
    size = 10
    # 11x11 with margin 5 leaves one candidate: the window at (0, 0)
    roi = torch.zeros(1, 11, 11, dtype=torch.long)
    roi[0, :10, :2] = 2  # 20 of its 100 pixels are confident foreground
    img = torch.zeros(1, 3, 11, 11)
    _, f_faithful = sample_local_crops(img, roi, 1, size, torch.Generator().manual_seed(0), faithful=True)
    _, f_corrected = sample_local_crops(img, roi, 1, size, torch.Generator().manual_seed(0), faithful=False)
    # faithful: sum 2 * 20 / 100 = 0.4 > 0.2 -> positive; corrected: 0.2 <= 0.2 -> negative
    assert f_faithful.item() == 1.0 and f_corrected.item() == 0.0
    roi[0, :10, :2] = 1  # uncertain pixels: faithful 0.2 -> negative as well
    _, f_faithful = sample_local_crops(img, roi, 1, size, torch.Generator().manual_seed(0), faithful=True)
    assert f_faithful.item() == 0.0


def test_crops_are_reproducible_from_the_seed():
    images = torch.rand(2, 3, 32, 32)
    roi = torch.randint(0, 3, (2, 32, 32))
    a = sample_local_crops(images, roi, 4, 8, torch.Generator().manual_seed(5))
    b = sample_local_crops(images, roi, 4, 8, torch.Generator().manual_seed(5))
    c = sample_local_crops(images, roi, 4, 8, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_crop_too_large_is_a_config_error():
    with pytest.raises(ConfigError, match="local_size"):
        sample_local_crops(torch.zeros(1, 3, 16, 16), torch.zeros(1, 16, 16, dtype=torch.long), 2, 16,
                           torch.Generator())


def test_random_resized_crop_and_jitter_keep_shape_and_change_content():
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, 16, 16)
    view = random_resized_crop(images, gen)
    assert view.shape == images.shape and not torch.equal(view, images)
    jittered = colour_jitter(images, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.Generator().manual_seed(0),
                             p_jitter=1.0, p_gray=0.0)
    assert jittered.shape == images.shape and not torch.allclose(jittered, images)
    same = colour_jitter(images, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.Generator().manual_seed(0),
                         p_jitter=0.0, p_gray=0.0)
    # no jitter: only the clamp to the valid [0, 1] pixel range changes values
    assert torch.allclose(same, ((images * 0.25 + 0.5).clamp(0, 1) - 0.5) / 0.25, atol=1e-6)
