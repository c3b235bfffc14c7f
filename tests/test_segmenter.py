import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from wsss.models.seg_heads import ASPP, SEG_HEADS
from wsss.models.segmenter import Segmenter
from wsss.train.seg_inference import predict_logits
from wsss.train.segmentation import SegmenterModule, segmentation_loss


@pytest.mark.parametrize("backbone,kwargs", [("resnet10t", {}), ("vit_custom", {"depth": 4, "embed_dim": 32,
                                                                                "num_heads": 2})])
@pytest.mark.parametrize("head", sorted(SEG_HEADS))
def test_heads_give_stride_16_logits(backbone, kwargs, head):
    model = Segmenter(backbone, 5, head=head, backbone_kwargs=kwargs).eval()
    x = torch.randn(2, 3, 64, 96)
    finest = 4 if (head == "segformer" and backbone == "resnet10t") else 16
    assert model(x).shape == (2, 5, 64 // finest, 96 // finest)
    assert model.forward_full(x).shape == (2, 5, 64, 96)


def test_aspp_sums_its_branches():
    head = ASPP([8], 3, rates=(1, 2))
    x = [torch.randn(1, 8, 6, 6)]
    torch.testing.assert_close(head(x), head.branches[0](x[0]) + head.branches[1](x[0]))


def test_loss_ignores_255_and_is_zero_not_nan_when_all_ignored():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.full((1, 8, 8), 255)
    loss = segmentation_loss(logits, target)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    target[0, 0, 0] = 1
    partial = segmentation_loss(logits, target)
    up = torch.nn.functional.interpolate(logits, size=(8, 8), mode="bilinear", align_corners=False)
    expected = torch.nn.functional.cross_entropy(up[:, :, 0, 0], torch.tensor([1]))
    torch.testing.assert_close(partial, expected)


def test_single_scale_inference_is_the_plain_forward_and_flip_fusion_sums():
    torch.manual_seed(0)
    model = Segmenter("resnet10t", 4).eval()
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        torch.testing.assert_close(predict_logits(model, x), model.forward_full(x))
        flipped = predict_logits(model, x, flip=True)
        torch.testing.assert_close(flipped, model.forward_full(x) + model.forward_full(x.flip(-1)).flip(-1))


def test_module_overfits_one_image_and_round_trips_through_a_checkpoint(tmp_path):
    pl.seed_everything(0)
    image = torch.randn(3, 32, 32)
    mask = torch.zeros(32, 32, dtype=torch.long)
    mask[8:24, 8:24] = 2
    batch = {"image": image, "mask": mask, "label": torch.zeros(2), "id": "a"}
    loader = DataLoader([batch] * 4, batch_size=4)
    module = SegmenterModule("resnet10t", 3, head="largefov", head_kwargs={"channels": 32, "dropout": 0.0},
                             optimizer="adamw", lr=1e-3, max_steps=40)
    first = segmentation_loss(module.model(image[None]), mask[None]).item()
    trainer = pl.Trainer(max_steps=40, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, loader)
    module.eval()
    last = segmentation_loss(module.model(image[None]), mask[None]).item()
    assert last < 0.5 * first
    trainer.save_checkpoint(tmp_path / "seg.ckpt")
    restored = Segmenter.from_checkpoint(tmp_path / "seg.ckpt").eval()
    with torch.no_grad():
        torch.testing.assert_close(restored(image[None]), module.model(image[None]))
