"""MCTformer-V2 host: the backbone with one class token per class, its classifier (3x3 conv head on
the patch tokens, class-token logits, two multilabel soft-margin losses) and its CAM methods,
checked against a re-statement of the official computation (xulianuwa/MCTformer 993012e,
``models.MCTformerV2.forward`` with ``attention_type`` and ``engine.generate_attention_maps_ms`` with
``--patch-attn-refine``). The official code cannot be vendored, so :func:`official_v2` below
re-states it on the same weights in the official step order: patch embedding, class tokens
concatenated first, positional embedding added, blocks with explicit softmax attention (weights
kept per block), no final norm, patch tokens reshaped, 3x3 conv head, average-pooled patch logits,
class-token logits as the channel mean, attention stacked and averaged over heads, ``mtatt`` from
the last ``n_layers`` blocks, fusion with the ReLU'd (detached) head map, patch attention summed over
all blocks, then ``matmul(patch_attn, cams)`` per class."""

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from wsss.cams import compute_cams, multiscale_cams
from wsss.errors import ConfigError
from wsss.models import build_backbone
from wsss.models.classifier import Classifier
from wsss.train.classification import ClassifierModule

C = 4
SIZE = 48  # 3x3 patches of 16 px: the native grid of img_size 48, no positional resampling
KW = dict(depth=3, embed_dim=24, num_heads=2, img_size=SIZE)


def _model(seed=0):
    torch.manual_seed(seed)
    model = Classifier("mctformer_custom", C, pooling="gap", backbone_kwargs=KW).eval()
    # non-trivial weights everywhere (timm zero-inits biases and LayerNorm shifts)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def official_v2(model, x, n_layers, attention_type="fused"):
    """The official MCTformerV2 forward (return_att=True) and the patch-attention refinement."""
    net, head = model.backbone.net, model.head.classifier
    b = x.shape[0]
    t = net.patch_embed.proj(x).flatten(2).transpose(1, 2)
    t = torch.cat((net.reg_token.expand(b, -1, -1), t), dim=1)
    t = t + net.pos_embed
    attn_weights = []
    for blk in net.blocks:
        a = blk.attn
        y = blk.norm1(t)
        n, d = y.shape[1], y.shape[2]
        qkv = a.qkv(y).reshape(b, n, 3, a.num_heads, d // a.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * a.scale).softmax(dim=-1)
        attn_weights.append(attn)
        t = t + a.proj((attn @ v).transpose(1, 2).reshape(b, n, d))
        t = t + blk.mlp(blk.norm2(t))
    x_cls, x_patch = t[:, :C], t[:, C:]
    p = x_patch.shape[1]
    x_patch = x_patch.reshape(b, int(p ** 0.5), int(p ** 0.5), -1).permute(0, 3, 1, 2).contiguous()
    x_patch = head(x_patch)
    x_patch_logits = x_patch.mean((2, 3))
    attn_weights = torch.stack(attn_weights).mean(2)
    feature_map = F.relu(x_patch.detach().clone())
    _, c, h, w = feature_map.shape
    mtatt = attn_weights[-n_layers:].sum(0)[:, 0:C, C:].reshape(b, c, h, w)
    if attention_type == "fused":
        cams = mtatt * feature_map
    elif attention_type == "patchcam":
        cams = feature_map
    else:
        cams = mtatt
    patch_attn = attn_weights[:, :, C:, C:].sum(0)
    x_cls_logits = x_cls.mean(-1)
    refined = torch.matmul(patch_attn.unsqueeze(1), cams.view(b, c, -1, 1)).reshape(b, c, h, w)
    return x_cls_logits, x_patch_logits, cams, refined


def test_backbone_layout_and_head():
    model = _model()
    bb = model.backbone
    assert bb.num_prefix_tokens == C and bb.num_class_tokens == C
    assert model.head.classifier.kernel_size == (3, 3) and model.head.classifier.bias is not None
    out = model.forward_outputs(torch.randn(2, 3, SIZE, SIZE), return_attn=True)
    assert out["backbone"].prefix_tokens.shape == (2, C, 24)
    assert out["token_logits"].shape == (2, C) and out["logits"].shape == (2, C)
    assert out["backbone"].attentions[0].shape == (2, 2, C + 9, C + 9)
    with pytest.raises(ConfigError, match="class token per class"):
        build_backbone("mctformer_custom", **KW)


def test_logits_and_maps_equal_the_official_computation():
    model = _model()
    x = torch.randn(2, 3, SIZE, SIZE)
    targets = torch.tensor([[0, 2, 3], [1, 3, -1]])
    out = model.forward_outputs(x)
    with torch.no_grad():
        for kind, method in (("fused", "mctformer"), ("attention", "mctformer_attn"),
                             ("patchcam", "mctformer_patchcam")):
            token_logits, patch_logits, cams, refined = official_v2(model, x, 3 if kind != "attention" else 2,
                                                                    kind)
            last_n = {"last_n": 2} if kind == "attention" else {}
            ours = compute_cams(model, x, targets, None, method=method, normalize=None, **last_n)
            ours_plain = compute_cams(model, x, targets, None, method=method, normalize=None, refine=False,
                                      **last_n)
            for i in range(2):
                for k in range(3):
                    if targets[i, k] < 0:
                        assert ours[i, k].abs().sum() == 0
                        continue
                    torch.testing.assert_close(ours[i, k], refined[i, targets[i, k]], rtol=1e-5, atol=1e-5)
                    torch.testing.assert_close(ours_plain[i, k], cams[i, targets[i, k]], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["token_logits"], token_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["logits"], patch_logits, rtol=1e-5, atol=1e-5)


def test_multiscale_export_runs_on_other_grids():
    model = _model()
    maps = multiscale_cams(model, torch.randn(1, 3, 64, 96), torch.tensor([[1, 2]]), None, method="mctformer",
                           scales=(1.0, 0.5), preset="irn")
    assert maps.shape == (1, 2, 64, 96) and torch.isfinite(maps).all() and maps.amax() <= 1


def test_mctformer_methods_refuse_a_single_token_vit():
    vit = Classifier("vit_custom", C, backbone_kwargs=dict(depth=2, embed_dim=16, num_heads=2))
    with pytest.raises(ValueError, match="one class token per class"):
        compute_cams(vit, torch.randn(1, 3, 32, 32), torch.tensor([[0]]), None, method="mctformer")


class _Images(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"image": torch.randn(3, SIZE, SIZE, generator=g), "label": (torch.arange(C) % 2 == i % 2).float()}


def test_training_uses_both_soft_margin_losses():
    torch.manual_seed(0)
    module = ClassifierModule(backbone="mctformer_custom", num_classes=C, pooling="gap", backbone_kwargs=KW,
                              optimizer="adamw", lr=1e-3, max_steps=2)
    logged = []

    class Terms(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            logged.append(set(trainer.callback_metrics))

    trainer = pl.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, callbacks=[Terms()])
    trainer.fit(module, DataLoader(_Images(), batch_size=2))
    assert {"train/cls", "train/token_cls", "train/loss"} <= logged[-1]
    batch = next(iter(DataLoader(_Images(), batch_size=2)))
    out = module.model.forward_outputs(batch["image"])
    terms = module._classification_loss(out, batch["label"])
    assert set(terms) == {"cls", "token_cls"}


def test_plain_cam_refuses_the_3x3_head_and_gradcam_works():
    model = _model()
    x, t = torch.randn(1, 3, SIZE, SIZE), torch.tensor([[1]])
    with pytest.raises(ValueError, match="1x1"):
        compute_cams(model, x, t, "feature_map", method="cam")
    assert torch.isfinite(compute_cams(model, x, t, "feature_map", method="gradcam")).all()
