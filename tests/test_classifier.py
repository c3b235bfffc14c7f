import pytest
import pytorch_lightning as pl
import torch
from sklearn.metrics import average_precision_score, f1_score
from torch.utils.data import DataLoader

from wsss.models.backbone_base import BackboneOutput
from wsss.models.classifier import Classifier
from wsss.models.vit import attention_probs
from wsss.refiners.base import Refiner
from wsss.train.classification import ClassifierModule
from wsss.train.metrics import average_precision, macro_f1
from wsss.train.optim import lr_multiplier

TINY_VIT = {"depth": 2, "embed_dim": 32, "num_heads": 2}


def loader(n=8, classes=3, size=32):
    g = torch.Generator().manual_seed(0)
    items = [{"image": torch.randn(3, size, size, generator=g), "label": (torch.rand(classes, generator=g) > 0.5).float(),
              "mask": torch.zeros(size, size, dtype=torch.long), "id": str(i)} for i in range(n)]
    return DataLoader(items, batch_size=4)


def fit(module, steps, data=None):
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, data or loader())
    return trainer


@pytest.mark.parametrize("backbone,kwargs", [("resnet10t", {}), ("vit_custom", TINY_VIT)])
def test_shapes_and_cam_is_the_head_on_the_final_map(backbone, kwargs):
    model = Classifier(backbone, 5, backbone_kwargs=kwargs, aux_layer=-2).eval()
    x = torch.randn(2, 3, 64, 96)
    out = model.forward_outputs(x)
    assert out["logits"].shape == out["aux_logits"].shape == (2, 5)
    assert out["features"].shape[-2:] == (4, 6)
    expected = torch.einsum("kc,bchw->bkhw", model.get_classifier().weight[:, :, 0, 0], out["features"])
    torch.testing.assert_close(model.cam(x), expected)
    torch.testing.assert_close(model(x), out["logits"])


def test_vit_attention_probabilities_reproduce_the_block():
    model = Classifier("vit_custom", 3, backbone_kwargs=TINY_VIT).eval()
    out: BackboneOutput = model.backbone(torch.randn(1, 3, 32, 48), return_attn=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (1, 2, 7, 7)
    block = model.backbone.net.blocks[0]
    tokens = model.backbone.net.patch_embed(torch.randn(1, 3, 32, 48))
    tokens = model.backbone.net._pos_embed(tokens)
    x = block.norm1(tokens)
    probs = attention_probs(block.attn, x)
    v = block.attn.qkv(x).reshape(1, 7, 3, 2, -1).permute(2, 0, 3, 1, 4)[2]
    manual = block.attn.proj((probs @ v).transpose(1, 2).reshape(1, 7, -1))
    torch.testing.assert_close(manual, block.attn(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(probs.sum(-1), torch.ones(1, 2, 7))


class Recorder(Refiner):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.calls = []

    def attach(self, model):
        self.calls.append("attach")

    def losses(self, batch, outputs, step):
        self.calls.append(("losses", step))
        return {"extra": (0.5, self.scale * outputs["logits"].square().mean()), "off": (0.0, torch.tensor(float("nan")))}

    def on_after_optimizer_step(self, model, step):
        self.calls.append(("after", step))


def test_refiner_hooks_are_called_in_order_with_step_numbers():
    refiner = Recorder()
    module = ClassifierModule("resnet10t", 3, refiners=[refiner], max_steps=2, lr=0.01)
    fit(module, 2)
    assert refiner.calls == ["attach", ("losses", 0), ("after", 0), ("losses", 1), ("after", 1)]
    assert refiner.scale.grad is not None  # the refiner's term reached the optimiser; the NaN term was skipped
    groups = module.configure_optimizers()["optimizer"].param_groups
    assert groups[1]["lr"] == pytest.approx(10 * groups[0]["lr"])
    assert any(p is refiner.scale for p in groups[1]["params"])


def test_seeded_runs_are_reproducible_and_checkpoints_round_trip(tmp_path):
    weights = []
    for _ in range(2):
        pl.seed_everything(3)
        module = ClassifierModule("resnet10t", 3, max_steps=3, lr=0.05)
        trainer = fit(module, 3)
        weights.append(module.model.get_classifier().weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)
    trainer.save_checkpoint(tmp_path / "c.ckpt")
    restored = Classifier.from_checkpoint(tmp_path / "c.ckpt").eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(restored(x), module.model.eval()(x))


def test_toco_schedule_multipliers():
    expected = {0: 1e-6, 750: 0.5000005, 1499: 0.9993333, 1500: 0.9322396, 19999: 1.34609e-4}
    for step, value in expected.items():
        assert lr_multiplier(step, 20000, 1500, 1e-6, 0.9) == pytest.approx(value, rel=1e-5)


def test_map_and_f1_match_sklearn():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(50, 4, generator=g)
    targets = (torch.rand(50, 4, generator=g) > 0.6).float()
    ours = average_precision(scores, targets)
    for c in range(4):
        assert float(ours[c]) == pytest.approx(average_precision_score(targets[:, c], scores[:, c]), rel=1e-6)
    assert macro_f1(scores, targets) == pytest.approx(
        f1_score(targets.numpy(), (scores >= 0.5).numpy(), average="macro", zero_division=0), rel=1e-6)


def test_prior_bias_takes_the_prior_of_an_always_present_class_and_stays_out_of_the_cam(tmp_path):
    pl.seed_everything(0)
    module = ClassifierModule("resnet10t", 3, max_steps=6, lr=0.05, prior_bias=True)
    always = loader()
    for batch in always.dataset:
        batch["label"][0] = 1.0
    trainer = fit(module, 6, always)
    model = module.model.eval()
    prior = model.head.prior.detach()
    assert prior[0] > 0.05 and prior[0] > prior[1:].max()
    x = torch.randn(2, 3, 64, 64)
    features = model.forward_outputs(x)["features"]
    expected = torch.einsum("kc,bchw->bkhw", model.get_classifier().weight[:, :, 0, 0], features)
    torch.testing.assert_close(model.cam(x), expected)
    torch.testing.assert_close(model(x), expected.mean(dim=(2, 3)) + prior)
    trainer.save_checkpoint(tmp_path / "c.ckpt")
    restored = Classifier.from_checkpoint(tmp_path / "c.ckpt").eval()
    torch.testing.assert_close(restored.head.prior, model.head.prior)
    torch.testing.assert_close(restored(x), model(x))
