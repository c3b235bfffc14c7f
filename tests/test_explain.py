"""`wsss explain`: grids of methods x classes, faithfulness equal to `wsss.eval.faithfulness` called
directly, wsss CNN/ViT classifiers and timm models by name, the target-layer rule, bad names."""

import csv

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from torch import nn

import wsss
from wsss.apply.classes import parse_class_choice
from wsss.apply.explain_model import from_timm, timm_target_layer
from wsss.apply.imagenet import imagenet_class_names
from wsss.cams import CAM_METHODS, compute_cams
from wsss.cli import main
from wsss.data.transforms import normalise_image
from wsss.errors import ConfigError
from wsss.eval.faithfulness import faithfulness
from wsss.models.classifier import Classifier
from wsss.viz.grid import grid_layout, resize_tile, tile_size
from wsss.viz.overlay import overlay_cam

NAMES = ["cat", "dog", "fish"]


def save_classifier(path, backbone, **kwargs):
    torch.manual_seed(0)
    model = Classifier(backbone, len(NAMES), backbone_kwargs=kwargs).eval()
    torch.save({"hyper_parameters": {"model_config": model.config},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    return model


def images_in(folder, sizes, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for i, (h, w) in enumerate(sizes):
        arrays[f"im{i}"] = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(arrays[f"im{i}"]).save(folder / f"im{i}.png")
    return arrays


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    model = save_classifier(root / "cnn.ckpt", "resnet10t")
    (root / "names.txt").write_text("\n".join(NAMES) + "\n")
    return root, model, images_in(root / "images", [(32, 32)] * 2)


def test_grid_has_methods_by_classes_panels_and_the_table_is_faithfulness_called_directly(cnn, tmp_path):
    root, model, arrays = cnn
    out = tmp_path / "explain"
    methods = ["cam", "eigencam"]
    assert main(["explain", "--images", str(root / "images"), "--ckpt", str(root / "cnn.ckpt"), "--methods",
                 ",".join(methods), "--classes", "topk:2", "--size", "0", "--class_names", str(root / "names.txt"),
                 "--explain_out", str(out), "--out", str(tmp_path / "run"), "--progress", "false"]) == 0
    x = torch.stack([normalise_image(a, model.mean, model.std) for a in arrays.values()])
    with torch.no_grad():
        targets = torch.sort(model(x), dim=1, descending=True, stable=True).indices[:, :2]
    table = {r["method"]: r for r in csv.DictReader((out / "faithfulness.csv").open())}
    assert list(table) == methods
    for method in methods:
        cams = compute_cams(model, x, targets, "feature_map", method=method, normalize="max")
        direct = faithfulness(model, x, cams, targets)
        assert {k: float(table[method][k]) for k in direct} == direct, method
        assert int(table[method]["pairs"]) == 4
        for i, (image_id, image) in enumerate(arrays.items()):
            with Image.open(out / f"{image_id}.png") as f:
                grid = np.asarray(f.convert("RGB"))
            th, tw = tile_size(32, 32)
            layout = grid_layout(len(methods), 2, th, tw, 0, True)
            label_width = grid.shape[1] - layout.width
            layout = grid_layout(len(methods), 2, th, tw, label_width, True)
            assert grid.shape[:2] == (layout.height, layout.width)
            r = methods.index(method)
            for k in range(2):
                x0, y0, w, h = layout.boxes[r][k]
                np.testing.assert_array_equal(grid[y0:y0 + h, x0:x0 + w],
                                              resize_tile(overlay_cam(image, cams[i, k].numpy()), (h, w)))
    rows = list(csv.DictReader((out / "classes.csv").open()))
    assert [r["class"] for r in rows[:2]] == [NAMES[int(c)] for c in targets[0]]
    assert (out / "faithfulness.png").is_file() and "| eigencam |" in (out / "faithfulness.md").read_text()


def test_the_api_returns_arrays_and_averages_mixed_sizes_over_pairs(cnn, tmp_path):
    root, model, _ = cnn
    arrays = images_in(tmp_path / "mixed", [(32, 48), (48, 32), (32, 48)], seed=3)
    result = wsss.explain(str(tmp_path / "mixed"), str(root / "cnn.ckpt"), ["gradcam"], classes="top1", size=0)
    assert [e.id for e in result.images] == list(arrays)
    parts = []
    for group in (["im0", "im2"], ["im1"]):
        x = torch.stack([normalise_image(arrays[i], model.mean, model.std) for i in group])
        targets = model(x).argmax(1, keepdim=True)
        cams = compute_cams(model, x, targets, "feature_map", method="gradcam")
        parts.append((faithfulness(model, x, cams, targets), len(group)))
        for j, image_id in enumerate(group):
            e = result.images[list(arrays).index(image_id)]
            assert e.class_ids == [int(targets[j, 0])] and e.cams["gradcam"].shape == (1, *arrays[image_id].shape[:2])
            np.testing.assert_allclose(e.cams["gradcam"], cams[j].numpy())
    for metric, value in parts[0][0].items():
        assert result.faithfulness["gradcam"][metric] == pytest.approx((value * 2 + parts[1][0][metric]) / 3,
                                                                     rel=1e-12, abs=1e-12)


def test_a_wsss_vit_classifier_with_attention_cams_on_a_non_square_image(tmp_path):
    model = save_classifier(tmp_path / "vit.ckpt", "vit_custom", depth=2, embed_dim=32, num_heads=2)
    image = np.random.default_rng(0).integers(0, 255, (32, 64, 3), dtype=np.uint8)
    result = wsss.explain(image, str(tmp_path / "vit.ckpt"), "attn_cam,gradcam", classes="topk:3", size=0,
                          faithfulness=False)
    (e,) = result.images
    assert e.cams["attn_cam"].shape == e.cams["gradcam"].shape == (3, 32, 64)
    assert e.scores == sorted(e.scores, reverse=True) and result.faithfulness == {}
    assert (e.cams["gradcam"].max(axis=(1, 2)) > 0).any()
    with pytest.raises(ConfigError, match="attn_cam needs a wsss ViT classifier"):
        wsss.explain(image, save_classifier(tmp_path / "c.ckpt", "resnet10t"), ["attn_cam"])
    del model


def test_a_timm_model_by_name_and_weight_file(tmp_path):
    torch.manual_seed(0)
    net = timm.create_model("resnet10t", num_classes=5)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "w.pth")
    images_in(tmp_path / "images", [(40, 56)])
    out = tmp_path / "out"
    assert main(["explain", "--timm", "resnet10t", "--weights", str(tmp_path / "w.pth"), "--images",
                 str(tmp_path / "images" / "im0.png"), "--methods", "gradcam,layercam", "--classes", "class4,class1",
                 "--faithfulness", "false", "--explain_out", str(out), "--out", str(tmp_path / "run"), "--progress", "false"]) == 0
    rows = list(csv.DictReader((out / "classes.csv").open()))
    assert [r["class"] for r in rows] == ["class4", "class1"]
    explained = from_timm("resnet10t", tmp_path / "w.pth")
    assert explained.target_layer == "layer4" and not explained.multilabel and explained.size == 224
    with Image.open(out / "im0.png") as grid:  # shorter side 224, panels of 224 x 320 (rounded to 16)
        assert grid.height == 2 * 20 + 2 * (224 + 4)
    with pytest.raises(ConfigError, match="give --weights FILE"):
        from_timm("resnet10t")
    with pytest.raises(ConfigError, match="unknown timm model 'resnet10x'.*resnet10t"):
        from_timm("resnet10x", tmp_path / "w.pth")


def test_the_vit_rule_reads_the_last_block_input_where_the_class_token_has_patch_gradients(tmp_path):
    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", num_classes=4, depth=2, dynamic_img_size=True).eval()
    assert timm_target_layer(net, (224, 224)) == "blocks.1.norm1"
    x = torch.randn(1, 3, 32, 48)
    targets = torch.tensor([[0, 1]])
    at_rule = compute_cams(net, x, targets, "blocks.1.norm1", method="gradcam", grid=(2, 3))
    at_final_norm = compute_cams(net, x, targets, "norm", method="gradcam", grid=(2, 3))
    assert at_rule.amax() > 0 and at_final_norm.abs().amax() == 0
    (e,) = wsss.explain(np.zeros((32, 48, 3), np.uint8), net, ["gradcam"], classes="top1", size=0,
                        faithfulness=False).images
    assert e.cams["gradcam"].shape == (1, 32, 48)


@pytest.mark.parametrize("name,layer", [("resnet10t", "layer4"), ("tf_efficientnet_lite0", "bn2"),
                                        ("mobilenetv3_small_050", "blocks")])
def test_the_cnn_rule_is_the_module_giving_the_final_feature_map(name, layer):
    assert timm_target_layer(timm.create_model(name).eval(), (64, 64)) == layer


def test_channel_last_models_are_refused():
    class ChannelLast(nn.Module):
        output_fmt = "NHWC"

    with pytest.raises(ConfigError, match="channel-last"):
        timm_target_layer(ChannelLast(), (32, 32))


def test_imagenet_names_come_from_timm_and_are_unique():
    names = imagenet_class_names()
    assert len(names) == len(set(names)) == 1000
    assert names[281] == "tabby" and names[285] == "Egyptian cat" and names[134] == "crane (n02012849)"


def test_unknown_method_or_class_names_stop_with_the_valid_ones(cnn, capsys):
    root, _, _ = cnn
    common = ["explain", "--images", str(root / "images"), "--ckpt", str(root / "cnn.ckpt"), "--class_names",
              str(root / "names.txt"), "--faithfulness", "false", "--progress", "false"]
    assert main([*common, "--methods", "gradcam,gradkam"]) == 2
    err = capsys.readouterr().err
    assert "unknown name 'gradkam'; closest: gradcam" in err
    assert all(m in err for m in CAM_METHODS)
    assert main([*common, "--classes", "dog,cow"]) == 2
    err = capsys.readouterr().err
    assert "unknown name 'cow'" in err and "valid names (3): cat, dog, fish" in err
    assert main([*common, "--classes", "present"]) == 2
    assert "--classes present needs the images' labels: pass --labels FILE" in capsys.readouterr().err


def test_present_explains_the_labelled_classes_in_score_order(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("image,labels\nim0.png,dog cat\nim1.jpg,\nsub/im2,fish\n")
    choice = parse_class_choice("present", NAMES, labels_file=labels)
    scores = torch.tensor([0.2, 0.7, 0.9])
    assert choice.select(scores, "im0") == ([1, 0], False)
    assert choice.select(scores, "im1") == ([], False)
    assert choice.select(scores, "sub/im2") == ([2], False)
    assert parse_class_choice("predicted", NAMES, threshold=0.95).select(scores, "x") == ([2], True)
    assert parse_class_choice("predicted", NAMES, threshold=0.5).select(scores, "x") == ([2, 1], False)
    with pytest.raises(Exception, match="no row for 1 image"):
        choice.check_images(["im0", "other"])


def test_panels_are_enlarged_or_reduced_to_between_128_and_224_pixels_high():
    assert tile_size(32, 48) == (128, 192) and tile_size(448, 600) == (224, 300) and tile_size(150, 99) == (150, 99)


def test_efficientnet_lite0_by_name_uses_the_package_weights_and_imagenet_names():
    from skimage import data

    result = wsss.explain(data.chelsea(), "tf_efficientnet_lite0", ["gradcam"], classes="top1", faithfulness=False)
    (e,) = result.images
    assert e.class_names[0] in {"Egyptian cat", "tiger cat", "tabby"} and e.image.shape == (224, 336, 3)
