"""PPL (progressive patch learning): split/stitch, patch branches on CNN stages and ViT blocks, the
stop-gradient of the explicit variant, the implicit stage schedule, and training in the real module."""

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from wsss.errors import ConfigError
from wsss.models.classifier import Classifier
from wsss.refiners import build_refiners
from wsss.refiners.ppl import PPLRefiner
from wsss.refiners.ppl.branches import PatchBranches, vit_patch_forward
from wsss.refiners.ppl.patches import merge, merge_tokens, pad_for_grid, padded_size, tile, tile_tokens
from wsss.refiners.toco import ToCoRefiner
from wsss.train.classification import ClassifierModule

TINY_VIT = dict(depth=4, embed_dim=24, num_heads=2)


def _models():
    """A ResNet and a ViT; the ResNet's zero-initialised last BN of each block is set to 1, so that
    its residual convs act (a fresh timm ResNet block is a 1x1 shortcut, with no spatial reach)."""
    torch.manual_seed(0)
    cnn = Classifier("resnet10t", 3).eval()
    for m in cnn.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
    return [cnn, Classifier("vit_custom", 3, backbone_kwargs=TINY_VIT).eval()]


@pytest.mark.parametrize("grid", [1, 2, 3, 4])
def test_tile_and_merge_are_exact_inverses(grid):
    x = torch.randn(2, 5, 4 * grid, 3 * grid)
    tiles = tile(x, grid)
    assert tiles.shape == (2 * grid * grid, 5, 4, 3)
    assert torch.equal(merge(tiles, grid), x)
    if grid > 1:
        assert torch.equal(tiles[grid + 1], x[0, :, 4:8, 3:6])  # patch (1, 1) of image 0
    y = torch.randn(2 * grid * grid, 5, 4, 3)
    assert torch.equal(tile(merge(y, grid), grid), y)


def test_token_split_is_an_exact_inverse_and_masks_the_padding():
    prefix, grid_map = torch.randn(2, 1, 6), torch.randn(2, 6, 5, 3)  # 5 x 3 grid: padded to 6 x 4
    tokens, mask = tile_tokens(prefix, grid_map, 2)
    assert tokens.shape == (8, 1 + 3 * 2, 6) and mask.shape == (8, 1, 1, 7)
    assert torch.equal(tokens[:, 0], prefix[:, 0].repeat_interleave(4, 0))
    # patch (1, 1) of each image holds rows 3-4 + a padding row, column 2 + a padding column
    assert (mask[3, 0, 0] == float("-inf")).sum() == 4 and mask[0].eq(0).all()
    back_prefix, back_map = merge_tokens(tokens, 2, 1, (5, 3))
    assert torch.equal(back_map, grid_map) and torch.allclose(back_prefix, prefix)
    assert tile_tokens(prefix, grid_map[..., :4, :2], 2)[1] is None


def test_padding_rule():
    assert [padded_size(s, 1, 4) for s in (7, 8)] == [7, 8]  # a 1 x 1 grid is never padded
    assert [padded_size(s, 2, 4) for s in (7, 8, 9)] == [8, 8, 16]
    assert padded_size(5, 3) == 6
    x = torch.ones(1, 1, 5, 7)
    padded = pad_for_grid(x, 2, 2)
    assert padded.shape[-2:] == (8, 8) and padded[..., :5, :7].eq(1).all() and padded.sum() == 35


@pytest.mark.parametrize("uneven", [False, True])
def test_a_one_by_one_grid_is_the_plain_model(uneven):
    """Every split point, both families, also at a size the stages (or a 2 x 2 grid) do not divide:
    the branch map is the unsplit final map and the fused and patch losses are the plain loss."""
    for model, size in zip(_models(), [(72, 56), (80, 48)] if uneven else [(64, 64)] * 2):
        refiner = PPLRefiner(variant="explicit", split_blocks=[0, 1, 2], grids=1, fusion="sum")
        refiner.attach(model)
        x = torch.randn(2, 3, *size)
        labels = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
        with torch.no_grad():
            outputs = model.forward_outputs(x)
            outputs["model"] = model
            for branch in refiner.branch_maps(outputs, 0):
                assert torch.equal(branch, outputs["features"])
            plain = F.multilabel_soft_margin_loss(outputs["logits"], labels)
            mean = PPLRefiner(variant="explicit", split_blocks=[0, 1, 2], grids=1)
            mean.attach(model)
            terms = mean.losses({"label": labels}, outputs, 0)
        assert torch.allclose(terms["ppl_fused"][1], plain, atol=1e-6)
        assert torch.allclose(terms["ppl_patch"][1], 3 * plain, atol=1e-5)


@pytest.mark.parametrize("family", [0, 1])
def test_patches_do_not_see_each_other(family):
    """With a 2 x 2 grid, changing the split map inside one patch changes the stitched output in
    that patch only (the blocks above the split have no cross-patch receptive field)."""
    model = _models()[family]
    branches = PatchBranches(model.backbone)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model.backbone(x)
        base = branches(out, 1, 2)
        if model.backbone.is_vit:
            p = model.backbone.num_prefix_tokens
            out.tokens[1] = out.tokens[1].clone()
            out.tokens[1][:, p] += 5.0  # token (0, 0): top-left patch
        else:
            out.features[1] = out.features[1].clone()
            out.features[1][..., 0, 0] += 5.0
        changed = (branches(out, 1, 2) - base).abs().sum(dim=1)[0]
        unsplit = (branches(out, 1, 1) - model.backbone(x).final).abs().sum(dim=1)[0]
    h, w = changed.shape
    assert changed[: h // 2, : w // 2].sum() > 0
    changed[: h // 2, : w // 2] = 0
    unsplit[: h // 2, : w // 2] = 0
    assert unsplit.sum() > 0  # without the split the change crosses into the other patches
    assert changed.abs().max() == 0


def test_a_non_divisible_vit_grid_is_padded_and_the_padding_does_not_act():
    """5 x 3 tokens on a 3 x 3 grid pad to 6 x 3: each bottom patch holds one token of row 4 and one
    padding token. It must come out as that token alone would (prefix + token, nothing padded)."""
    model = Classifier("vit_custom", 3, backbone_kwargs=TINY_VIT).eval()
    backbone, p = model.backbone, model.backbone.num_prefix_tokens
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, 80, 48))
        whole = PatchBranches(backbone)(out, 0, 3)
        rows = backbone.to_map(out.tokens[0][:, p:], 5, 3)
        prefix = out.tokens[0][:, :p]
        for j in range(3):
            alone = torch.cat([prefix, rows[..., 4, j][:, None]], dim=1)
            assert torch.allclose(whole[..., 4, j], vit_patch_forward(backbone, alone, (1, 1), 0, 1)[1][..., 0, 0],
                                  atol=1e-5)
        unmasked = torch.cat([prefix, rows[..., 4, 0][:, None], torch.zeros_like(prefix[:, :1])], dim=1)
        leaky = vit_patch_forward(backbone, unmasked, (2, 1), 0, 1)[1][..., 0, 0]
    assert whole.shape == (2, 24, 5, 3)
    assert not torch.allclose(whole[..., 4, 0], leaky, atol=1e-4)  # an unmasked padding token would act


@pytest.mark.parametrize("family", [0, 1])
def test_stop_gradient_keeps_the_patch_losses_out_of_the_lower_blocks(family):
    for stop in (True, False):
        torch.manual_seed(0)
        model = Classifier(*(("resnet10t", 3) if family == 0 else ("vit_custom", 3)),
                           backbone_kwargs={} if family == 0 else TINY_VIT)
        refiner = PPLRefiner(variant="explicit", split_blocks=[1], grids=2, fused_weight=0.0, stop_gradient=stop)
        refiner.attach(model)
        outputs = model.forward_outputs(torch.randn(2, 3, 64, 64))
        outputs["model"] = model
        terms = refiner.losses({"label": torch.tensor([[1.0, 0, 1], [0, 1, 0]])}, outputs, 0)
        assert set(terms) == {"ppl_patch"}
        terms["ppl_patch"][1].backward()
        net = model.backbone.net
        lower = list(net.layer2.parameters()) if family == 0 else list(net.blocks[1].parameters())
        upper = list(net.layer3.parameters()) if family == 0 else list(net.blocks[2].parameters())
        lower_grad = sum(float(p.grad.abs().sum()) for p in lower if p.grad is not None)
        assert sum(float(p.grad.abs().sum()) for p in upper if p.grad is not None) > 0
        assert (lower_grad == 0) == stop
        assert model.head.classifier.weight.grad.abs().sum() > 0


def test_the_implicit_schedule_moves_the_split_one_block_deeper_per_stage():
    refiner = PPLRefiner(split_blocks=[-4, -3, -2])
    refiner.configure_stages(90)
    refiner.attach(Classifier("resnet10t", 3))
    assert refiner.stages == [("split1", 0), ("split2", 30), ("split3", 60)]
    assert [refiner.active(s) for s in (0, 29, 30, 59, 60, 89)] == [[(0, 2)], [(0, 2)], [(1, 2)], [(1, 2)],
                                                                      [(2, 2)], [(2, 2)]]
    assert refiner.restart_schedule_per_stage and not refiner.stop_gradient
    explicit = PPLRefiner(variant="explicit", grids=[4, 2, 1])
    explicit.configure_stages(90)
    explicit.attach(Classifier("vit_custom", 3, backbone_kwargs=dict(depth=6, embed_dim=24, num_heads=2)))
    assert explicit.stages == [("explicit", 0)] and explicit.active(50) == [(2, 4), (3, 2), (4, 1)]
    assert explicit.stop_gradient and not explicit.restart_schedule_per_stage


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="must leave a block above it"):
        PPLRefiner(split_blocks=[3]).attach(Classifier("resnet10t", 3))
    with pytest.raises(ConfigError, match="one entry per split_blocks"):
        PPLRefiner(split_blocks=[0, 1], grids=[2, 2, 2])
    with pytest.raises(ConfigError, match="variant"):
        PPLRefiner(variant="both")
    with pytest.raises(ConfigError, match="bad options"):
        build_refiners([{"name": "ppl", "granularity": 2}])


class RandomImages(torch.utils.data.Dataset):
    def __init__(self, n=8):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, 64, 64, generator=g)
        self.labels = (torch.rand(n, 3, generator=g) < 0.5).float()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": self.labels[i], "id": str(i)}


def _fit(module, steps):
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, torch.utils.data.DataLoader(RandomImages(), batch_size=4))
    return trainer


def test_the_implicit_stages_train_the_moving_split_in_the_module(monkeypatch):
    used = []
    real = PatchBranches.__call__

    def spy(self, out, split, grid, detach=False):
        used.append(split)
        return real(self, out, split, grid, detach)

    monkeypatch.setattr(PatchBranches, "__call__", spy)
    pl.seed_everything(0)
    module = ClassifierModule("resnet10t", 3, refiners=[PPLRefiner(split_blocks=[1, 2])], lr=0.01, max_steps=4)
    assert module.stage_ends() == {2: "split1"}
    before = [p.detach().clone() for p in module.model.backbone.net.layer2.parameters()]
    trainer = _fit(module, 4)
    assert used == [1, 1, 2, 2]
    assert any(not torch.equal(a, b) for a, b in zip(before, module.model.backbone.net.layer2.parameters()))
    schedule = trainer.lr_scheduler_configs[0].scheduler
    assert schedule.lr_lambdas[0](2) == schedule.lr_lambdas[0](0)  # restarted at the stage boundary


def test_it_composes_with_toco_in_one_training_step():
    ppl = PPLRefiner(variant="explicit", split_blocks=[-3, -2], grids=[2, 4])
    toco = ToCoRefiner("voc", proj_hidden_dim=16, proj_bottleneck_dim=8, proj_dim=12, decoder_channels=8,
                       n_local=2, local_size=32, cam_scales=(1.0,), seg_warmup=0)
    module = ClassifierModule(backbone="vit_custom", num_classes=3, pooling="gmp", aux_layer=-3,
                              backbone_kwargs=TINY_VIT, optimizer="adamw", lr=1e-4, refiners=[ppl, toco],
                              max_steps=1)
    batch = next(iter(torch.utils.data.DataLoader(RandomImages(), batch_size=4)))
    logged = {}
    module.log = lambda name, value, **kwargs: logged.__setitem__(name, float(value.detach()))
    loss = module.training_step(batch, 0)
    loss.backward()
    assert {"train/ppl_patch", "train/ppl_fused", "train/toco_ptc", "train/toco_seg"} <= set(logged)
    assert torch.isfinite(loss)
    assert module.model.backbone.net.blocks[-1].attn.qkv.weight.grad.abs().sum() > 0
