"""DOEI (spec C.5, reconstruction of C.2): the parameter-free operators, the hooks on the last ViT
blocks of a single-class-token ViT (patch-wise branch alone) and of the MCTformer host (both
branches), the switches, gradients, and a training step composed with ToCo."""

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from wsss.errors import ConfigError
from wsss.models.classifier import Classifier
from wsss.refiners import REFINERS, build_refiner, build_refiners
from wsss.refiners.doei import DOEIRefiner
from wsss.refiners.doei.ops import (
    decouple_rows,
    depth_strengths,
    hybrid_affinity,
    patch_decoupling,
    predicted_presence,
    token_confidence,
)
from wsss.train.classification import ClassifierModule

C = 3


def _vit(seed=0, **kw):
    torch.manual_seed(seed)
    return Classifier("vit_custom", C, pooling="gmp", aux_layer=-3,
                      backbone_kwargs=dict(depth=4, embed_dim=24, num_heads=2, **kw))


def _mct(seed=0):
    torch.manual_seed(seed)
    return Classifier("mctformer_custom", C, pooling="gap", backbone_kwargs=dict(depth=3, embed_dim=24, num_heads=2))


# candidates guaranteed on random models: everything at or above the median-ish level is "high"
LOOSE = dict(high=0.5, low=0.3, beta=1.0, gamma=0.5, num_blocks=2)


def _images(n=2, size=64, seed=1):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _attached(model, **kw):
    refiner = build_refiner("doei", **{**LOOSE, **kw})
    refiner.attach(model)
    return refiner


# ---- operators -------------------------------------------------------------------------------

def test_decouple_rows_sums_ranks_and_mass():
    torch.manual_seed(0)
    rows = torch.rand(4, 10).softmax(-1)
    high = torch.rand(4, 10) > 0.6
    low = (torch.rand(4, 10) > 0.6) & ~high
    out = decouple_rows(rows, high, low, 0.3)
    torch.testing.assert_close(out.sum(-1), torch.ones(4), atol=1e-6, rtol=0)
    assert (out[high] > 0).all()
    # the high-set mass grows, the low-set mass shrinks (where both sets are non-empty)
    for r in range(4):
        if high[r].any() and low[r].any():
            assert out[r][high[r]].sum() > rows[r][high[r]].sum()
            assert out[r][low[r]].sum() < rows[r][low[r]].sum()
    # row rankings are kept inside each group and whenever the larger weight has the larger factor
    factor = 1 + 0.3 * (high.float() - low.float())
    for r in range(4):
        for i in range(10):
            for j in range(10):
                if rows[r, i] > rows[r, j] and factor[r, i] >= factor[r, j]:
                    assert out[r, i] > out[r, j]


def test_decouple_rows_uniform_row_closed_form():
    n, g = 10, 0.2
    high = torch.zeros(n, dtype=torch.bool)
    high[:3] = True
    low = torch.zeros(n, dtype=torch.bool)
    low[-5:] = True
    out = decouple_rows(torch.full((n,), 1 / n), high, low, g)
    want = (1 + g) / (n + g * (3 - 5))
    torch.testing.assert_close(out[:3], torch.full((3,), want))
    torch.testing.assert_close(out[-5:], torch.full((5,), (1 - g) / (n + g * (3 - 5))))


def test_hybrid_affinity_rows_and_permutation():
    torch.manual_seed(0)
    n = 7
    attn = torch.rand(1, n, n).softmax(-1)
    emb, rgb = torch.randn(1, n, 5), torch.rand(1, n, 3)
    for mode in ("sum", "rgb_weighted"):
        w = hybrid_affinity(attn, emb, rgb, mode)
        torch.testing.assert_close(w.sum(-1), torch.ones(1, n))
        perm = torch.randperm(n)
        wp = hybrid_affinity(attn[:, perm][:, :, perm], emb[:, perm], rgb[:, perm], mode)
        torch.testing.assert_close(wp, w[:, perm][:, :, perm])
    with pytest.raises(ValueError):
        hybrid_affinity(attn, emb, rgb, "other")


def test_patch_decoupling_identity_without_candidates_and_closed_form():
    torch.manual_seed(0)
    n, d = 6, 4
    w = torch.rand(1, n, n).softmax(-1)
    emb = torch.randn(1, n, d)
    labels = torch.tensor([[0, 0, 0, 1, 1, 2]])
    none = torch.zeros(1, n, dtype=torch.bool)
    assert patch_decoupling(emb, w, labels, none, none).abs().sum() == 0
    # identical embeddings on the H tokens of label 0, no L: each becomes (1 + beta * w_H) e
    e = torch.randn(d)
    emb[0, :3] = e
    high = torch.tensor([[True, True, True, False, False, False]])
    beta = 0.1
    out = emb + beta * patch_decoupling(emb, w, labels, high, none)
    for i in range(3):
        torch.testing.assert_close(out[0, i], (1 + beta * w[0, i, :3].sum()) * e)
    # permuting tokens permutes the direction
    perm = torch.randperm(n)
    dp = patch_decoupling(emb[:, perm], w[:, perm][:, :, perm], labels[:, perm], high[:, perm], none)
    torch.testing.assert_close(dp, patch_decoupling(emb, w, labels, high, none)[:, perm])


def test_confidence_presence_and_depth_schedule():
    maps = torch.tensor([[[0.9, 0.1, 0.0], [0.2, 0.8, 1.0]]])
    s, y = token_confidence(maps, torch.tensor([[True, False]]))
    assert torch.equal(y, torch.zeros(1, 3, dtype=torch.long)) and torch.allclose(s, maps[0, 0])
    assert predicted_presence(torch.tensor([[-1.0, -0.5, -2.0]])).tolist() == [[False, True, False]]
    assert predicted_presence(torch.tensor([[1.0, -0.5, 2.0]])).tolist() == [[True, False, True]]
    assert depth_strengths(0.3, 3) == pytest.approx([0.1, 0.2, 0.3])


# ---- hooks on a single-class-token ViT -------------------------------------------------------------

def test_parameters_state_and_shapes_unchanged():
    plain, model = _vit(), _vit()
    keys = list(model.state_dict())
    count = sum(p.numel() for p in model.parameters())
    refiner = _attached(model)
    assert sum(p.numel() for p in model.parameters()) == count and list(model.state_dict()) == keys
    assert list(refiner.parameters()) == [] and refiner.state_dict() == {}
    x = _images()
    a, b = plain.eval().forward_outputs(x), model.eval().forward_outputs(x)
    for i, (fa, fb) in enumerate(zip(a["backbone"].tokens, b["backbone"].tokens, strict=True)):
        assert fa.shape == fb.shape
        assert torch.equal(fa, fb) == (i < 2)  # only the last 2 blocks are wrapped
    # the patch-wise branch never touches the class token of the block it runs in
    assert not torch.equal(a["logits"], b["logits"])


@pytest.mark.parametrize("kw", [dict(residual_scale=0.0), dict(beta=0.0, gamma=0.0), dict(high=1.5, low=-0.5)])
def test_identity_settings_are_bit_identical(kw):
    plain, model = _vit(), _vit()
    _attached(model, **kw)
    x = _images()
    for train in (True, False):
        plain.train(train)
        model.train(train)
        a = plain.forward_outputs(x, return_attn=True)
        b = model.forward_outputs(x, return_attn=True)
        assert torch.equal(a["logits"], b["logits"]) and torch.equal(a["aux_logits"], b["aux_logits"])
        for ta, tb in zip(a["backbone"].attentions, b["backbone"].attentions, strict=True):
            assert torch.equal(ta, tb)


def test_class_token_untouched_by_patch_branch():
    model = _vit().eval()
    refiner = _attached(model, num_blocks=1)
    block = model.backbone.net.blocks[-1]
    seen = {}
    handle = block.register_forward_hook(lambda m, a, o: seen.setdefault("out", o))
    refiner.detach()
    x = _images()
    model.forward_outputs(x)
    plain_out = seen.pop("out")
    handle.remove()
    refiner.attach(model)
    tokens = model.forward_outputs(x)["backbone"].tokens[-1]
    assert torch.equal(tokens[:, :1], plain_out[:, :1]) and not torch.equal(tokens[:, 1:], plain_out[:, 1:])


def test_switches_and_gradients():
    x = _images()
    labels = torch.tensor([[1.0, 0, 1], [0, 1, 0]])

    def grads(model):
        model.zero_grad()
        loss = torch.nn.functional.multilabel_soft_margin_loss(model.train().forward_outputs(x)["logits"], labels)
        loss.backward()
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]

    plain = grads(_vit())
    active = _vit()
    _attached(active)
    flowing = grads(active)
    assert all(torch.isfinite(g).all() for g in flowing)
    assert any(not torch.equal(a, b) for a, b in zip(plain, flowing, strict=True))
    # the wrapped blocks receive gradient through the decoupled embeddings
    assert active.backbone.net.blocks[-1].mlp.fc2.weight.grad.abs().sum() > 0
    # inference only: training forwards and gradients are exactly the plain model's
    inference_only = _vit()
    refiner = _attached(inference_only, in_training=False)
    assert all(torch.equal(a, b) for a, b in zip(plain, grads(inference_only), strict=True))
    assert not torch.equal(_vit().eval().forward_outputs(x)["logits"], inference_only.eval().forward_outputs(x)["logits"])
    # training only: eval forwards are the plain model's
    refiner.in_training, refiner.in_inference = True, False
    assert torch.equal(_vit().eval().forward_outputs(x)["logits"], inference_only.eval().forward_outputs(x)["logits"])


def test_confidence_carries_no_gradient():
    from wsss.refiners.doei import block as doei_block

    recorded = {}
    original = doei_block.patch_decoupling

    def spy(embeddings, affinity, labels, high, low):
        recorded.update(affinity=affinity, high=high, low=low, labels=labels, embeddings=embeddings)
        return original(embeddings, affinity, labels, high, low)

    model = _vit().train()
    _attached(model)
    doei_block.patch_decoupling = spy
    try:
        model.forward_outputs(_images())
    finally:
        doei_block.patch_decoupling = original
    assert not any(recorded[k].requires_grad for k in ("affinity", "high", "low", "labels"))
    assert recorded["embeddings"].requires_grad


def test_config_errors():
    with pytest.raises(ConfigError, match="num_blocks"):
        DOEIRefiner(num_blocks=0)
    with pytest.raises(ConfigError, match="hybrid"):
        DOEIRefiner(hybrid="mean")
    with pytest.raises(ConfigError, match="exceeds"):
        DOEIRefiner(num_blocks=9).attach(_vit())
    cnn = Classifier("resnet10t", C)
    with pytest.raises(ConfigError, match="ViT"):
        DOEIRefiner().attach(cnn)
    assert REFINERS["doei"] is DOEIRefiner and DOEIRefiner.families == ("vit",)


# ---- MCTformer host: both branches ------------------------------------------------------------------

def test_class_wise_branch_on_mctformer_host():
    plain, model = _mct(), _mct()
    refiner = _attached(model)
    x = _images(size=48)
    a = plain.eval().forward_outputs(x, return_attn=True)
    b = model.eval().forward_outputs(x, return_attn=True)
    att_a, att_b = a["backbone"].attentions, b["backbone"].attentions
    assert torch.equal(att_a[0], att_b[0])  # block 0 is not wrapped
    changed = [not torch.equal(p[:, :, :C], q[:, :, :C]) for p, q in zip(att_a[1:], att_b[1:], strict=True)]
    assert any(changed)
    for att in att_b:
        torch.testing.assert_close(att.sum(-1), torch.ones_like(att.sum(-1)), atol=1e-6, rtol=0)
    assert not torch.equal(a["token_logits"], b["token_logits"])
    # the class-wise branch alone changes class tokens only in the block it runs in
    refiner.settings.patch_wise = False
    c = model.forward_outputs(x)
    assert torch.equal(c["backbone"].tokens[1][:, C:], a["backbone"].tokens[1][:, C:])
    assert not torch.equal(c["backbone"].tokens[1][:, :C], a["backbone"].tokens[1][:, :C])


# ---- composition ------------------------------------------------------------------------------------

class _Images(torch.utils.data.Dataset):
    def __init__(self, size=64):
        self.size = size

    def __len__(self):
        return 4

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"image": torch.randn(3, self.size, self.size, generator=g),
                "label": (torch.arange(C) % 2 == i % 2).float()}


def _fit(module, size=64):
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0)
    before = [p.detach().clone() for p in module.model.parameters()]
    trainer.fit(module, DataLoader(_Images(size), batch_size=2))
    assert any(not torch.equal(a, p) for a, p in zip(before, module.model.parameters(), strict=True))
    return trainer


def test_composes_with_toco():
    toco = dict(name="toco", dataset="voc", seg_warmup=1, proj_hidden_dim=16, proj_bottleneck_dim=8, proj_dim=12,
                decoder_channels=8, n_local=2, local_size=32, cam_scales=(1.0, 0.5))
    configs = [toco, dict(name="doei", **LOOSE)]
    torch.manual_seed(0)
    module = ClassifierModule(backbone="vit_custom", num_classes=C, pooling="gmp", aux_layer=-3,
                              backbone_kwargs=dict(depth=4, embed_dim=24, num_heads=2), optimizer="adamw",
                              lr=1e-3, max_steps=2, refiners=build_refiners(configs), refiner_configs=configs)
    trainer = _fit(module)
    assert {"train/toco_ptc", "train/toco_ctc", "train/toco_seg"} <= set(trainer.callback_metrics)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


def test_trains_on_mctformer_host():
    configs = [dict(name="doei", **LOOSE)]
    torch.manual_seed(0)
    module = ClassifierModule(backbone="mctformer_custom", num_classes=C, pooling="gap",
                              backbone_kwargs=dict(depth=3, embed_dim=24, num_heads=2), optimizer="adamw",
                              lr=1e-3, max_steps=2, refiners=build_refiners(configs), refiner_configs=configs)
    trainer = _fit(module, size=48)
    assert torch.isfinite(trainer.callback_metrics["train/token_cls"])


def test_checkpoint_rebuild_reattaches_doei(tmp_path):
    from wsss.train.classification import load_classifier_checkpoint

    configs = [dict(name="doei", **LOOSE)]
    torch.manual_seed(0)
    module = ClassifierModule(backbone="vit_custom", num_classes=C, pooling="gmp",
                              backbone_kwargs=dict(depth=4, embed_dim=24, num_heads=2), optimizer="adamw",
                              lr=1e-3, max_steps=2, refiners=build_refiners(configs), refiner_configs=configs)
    trainer = _fit(module)
    trainer.save_checkpoint(tmp_path / "cls.ckpt")
    rebuilt = load_classifier_checkpoint(tmp_path / "cls.ckpt").eval()
    x = _images()
    want = module.model.eval().forward_outputs(x)["logits"]
    assert torch.equal(rebuilt.forward_outputs(x)["logits"], want)
    rebuilt.attached_refiners[0].detach()
    assert not torch.equal(rebuilt.forward_outputs(x)["logits"], want)
