"""Every dataset on small fixtures in its real layout, and the synthetic generator's properties."""

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from wsss.data import build_dataset
from wsss.data.datamodule import WSSSDataModule
from wsss.data.palette import read_mask, write_mask
from wsss.data.synthetic import CLASSES, SyntheticSettings, generate_synthetic, render_image
from wsss.data.transforms import train_transform
from wsss.errors import ConfigError, DataError


def make_voc(root, n=4, size=(20, 24)):
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    ids = [f"2007_{i:06d}" for i in range(n)]
    for i, image_id in enumerate(ids):
        Image.fromarray(np.full((*size, 3), 40 * i, np.uint8)).save(voc / "JPEGImages" / f"{image_id}.jpg")
        mask = np.zeros(size, np.uint8)
        mask[2:8, 2:8] = i + 1
        mask[0, :] = 255
        write_mask(voc / "SegmentationClass" / f"{image_id}.png", mask)
    (voc / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids[:3]) + "\n")
    (voc / "ImageSets/Segmentation/val.txt").write_text(ids[3] + "\n")
    return voc, ids


def test_voc_labels_are_derived_once_and_cached(tmp_path, monkeypatch):
    voc, ids = make_voc(tmp_path)
    ds = build_dataset("voc", str(tmp_path), "train")
    assert ds.ids == ids[:3] and ds.num_classes == 21
    assert [ds.labels(i).tolist() for i in ds.ids] == [[1], [2], [3]]
    assert ds.label_vector(ids[1]).tolist()[:3] == [0, 1, 0]
    cache = voc / "ImageSets/Segmentation/train_labels.json"
    assert json.loads(cache.read_text())["labels"] == [[1], [2], [3]]
    monkeypatch.setattr("wsss.data.voc.read_mask", lambda *a, **k: pytest.fail("labels re-derived"))
    again = build_dataset("voc", str(voc), "train")  # the VOC2012 folder itself is accepted too
    assert again.labels(ids[2]).tolist() == [3]


def test_voc_errors_name_the_path_and_the_layout(tmp_path):
    with pytest.raises(DataError, match=r"(?s)nowhere.*VOCdevkit"):
        build_dataset("voc", str(tmp_path / "nowhere"), "train")
    voc, ids = make_voc(tmp_path)
    with pytest.raises(DataError, match=r"train_aug\.txt"):
        build_dataset("voc", str(tmp_path), "train_aug")
    write_mask(voc / "SegmentationClass" / f"{ids[0]}.png", np.full((20, 24), 30, np.uint8))
    with pytest.raises(DataError, match=rf"{ids[0]}\.png.*value 30"):
        build_dataset("voc", str(tmp_path), "train")


def test_corrupt_image_is_named_or_skipped(tmp_path):
    voc, ids = make_voc(tmp_path)
    (voc / "JPEGImages" / f"{ids[1]}.jpg").write_bytes(b"not a jpeg")
    ds = build_dataset("voc", str(tmp_path), "train")
    with pytest.raises(DataError, match=rf"{ids[1]}\.jpg.*skip_bad_images"):
        ds.load_image(ids[1])
    skipping = build_dataset("voc", str(tmp_path), "train", skip_bad_images=True)
    assert skipping.ids == [ids[0], ids[2]]


def test_mask_dir_overrides_the_ground_truth_and_missing_masks_are_errors(tmp_path):
    _, ids = make_voc(tmp_path)
    pseudo = tmp_path / "pseudo"
    write_mask(pseudo / f"{ids[0]}.png", np.full((20, 24), 7, np.uint8))
    ds = build_dataset("voc", str(tmp_path), "train", mask_dir=str(pseudo))
    assert int(ds.load_mask(ids[0])[0, 0]) == 7
    with pytest.raises(DataError, match=ids[1]):
        ds.load_mask(ids[1])


def make_coco(root):
    import pycocotools.mask as mask_utils

    (root / "val2014").mkdir(parents=True)
    (root / "annotations").mkdir()
    images = []
    for i in (1, 2):
        name = f"COCO_val2014_{i:012d}.jpg"
        Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(root / "val2014" / name)
        images.append({"id": i, "file_name": name, "height": 10, "width": 12})
    rle_mask = np.zeros((10, 12), np.uint8, order="F")
    rle_mask[6:9, 0:4] = 1
    rle = mask_utils.encode(rle_mask)
    rle["counts"] = rle["counts"].decode()
    anns = [
        {"id": 1, "image_id": 1, "category_id": 90, "iscrowd": 0, "area": 1, "bbox": [0, 0, 1, 1],
         "segmentation": [[0, 0, 6, 0, 6, 5, 0, 5]]},
        {"id": 2, "image_id": 1, "category_id": 5, "iscrowd": 0, "area": 1, "bbox": [0, 0, 1, 1],
         "segmentation": [[3, 0, 9, 0, 9, 5, 3, 5]]},
        {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 1, "area": 1, "bbox": [0, 0, 1, 1],
         "segmentation": rle},
        {"id": 4, "image_id": 2, "category_id": 5, "iscrowd": 0, "area": 1, "bbox": [0, 0, 1, 1],
         "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]},
    ]
    cats = [{"id": c, "name": n, "supercategory": "x"} for c, n in ((90, "toothbrush"), (1, "person"), (5, "airplane"))]
    (root / "annotations" / "instances_val2014.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}))


def test_coco_instances_become_contiguous_semantic_masks_once(tmp_path, monkeypatch):
    make_coco(tmp_path)
    ds = build_dataset("coco", str(tmp_path), "val")
    assert ds.class_names == ["background", "person", "airplane", "toothbrush"]
    first = "COCO_val2014_000000000001"
    assert ds.labels(first).tolist() == [2, 3]  # crowd person is not a label
    mask = ds.load_mask(first)
    assert mask[2, 1] == 3 and mask[2, 5] == 2  # the later instance (airplane) overwrites the overlap
    assert mask[7, 1] == 255  # crowd region
    assert (tmp_path / "SegmentationClass" / "val2014" / f"{first}.png").is_file()
    monkeypatch.setattr("wsss.data.coco.instances_to_mask", lambda *a: pytest.fail("converted twice"))
    assert build_dataset("coco", str(tmp_path), "val").labels(first).tolist() == [2, 3]
    with pytest.raises(DataError, match="train2014"):
        build_dataset("coco", str(tmp_path), "train")


def make_folder(root, rows, n=10):
    (root / "images").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / f"img{i}.png")
    (root / "classes.txt").write_text("background\ncat\ndog\n")
    (root / "labels.csv").write_text("image,labels\n" + "\n".join(rows) + "\n")


def test_folder_dataset_split_labels_and_errors(tmp_path):
    make_folder(tmp_path, [f"img{i}.png,{'cat dog' if i % 2 else ''}" for i in range(10)])
    train = build_dataset("folder", str(tmp_path), "train")
    val = build_dataset("folder", str(tmp_path), "val")
    assert len(train) == 8 and len(val) == 2 and not set(train.ids) & set(val.ids)
    assert build_dataset("folder", str(tmp_path), "val").ids == val.ids
    assert train.labels("img1").tolist() == [1, 2] and train.labels("img0").tolist() == []
    bad = tmp_path / "bad"
    make_folder(bad, ["img0.png,cat", "img1.png,horse"], n=2)
    with pytest.raises(DataError, match=r"labels\.csv, row 3.*horse"):
        build_dataset("folder", str(bad), "train")
    with pytest.raises(ConfigError, match="unknown dataset"):
        build_dataset("imagenet", str(bad), "train")


def test_synthetic_generation_is_deterministic_and_reused(tmp_path):
    a = generate_synthetic(tmp_path / "a", n_train=6, n_val=2, image_size=48, seed=3)
    b = generate_synthetic(tmp_path / "b", n_train=6, n_val=2, image_size=48, seed=3)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    stamp = (a / "synthetic.json").stat().st_mtime_ns
    generate_synthetic(tmp_path / "a", n_train=6, n_val=2, image_size=48, seed=3)
    assert (a / "synthetic.json").stat().st_mtime_ns == stamp
    c = generate_synthetic(tmp_path / "c", n_train=6, n_val=2, image_size=48, seed=4)
    assert (c / "VOCdevkit/VOC2012/JPEGImages/train_00000.jpg").read_bytes() != (
        a / "VOCdevkit/VOC2012/JPEGImages/train_00000.jpg").read_bytes()


def test_synthetic_images_are_hard_in_the_documented_ways():
    settings = SyntheticSettings(image_size=96)
    rng = np.random.default_rng(0)
    boats, boats_on_water, ratios, objects = 0, 0, [], Counter()
    for _ in range(200):
        image, mask, info = render_image(settings, rng)
        assert set(np.unique(mask)) <= set(range(len(CLASSES)))
        objects[len(info["objects"])] += 1
        boat = CLASSES.index("boat")
        if boat in info["objects"]:
            boats += 1
            boats_on_water += any(c == (boat, "water") for c in info["contexts"])
        ratios += [info["part_pixels"][k] / info["body_pixels"][k] for k in info["part_pixels"]]
    assert len(CLASSES) - 1 >= 6
    assert set(objects) <= {1, 2, 3} and len(objects) >= 2
    assert boats > 20 and boats_on_water / boats >= 0.8
    assert 0.05 <= float(np.mean(ratios)) <= 0.3


def test_synthetic_labels_match_the_masks(tmp_path):
    ds = build_dataset("synthetic", str(tmp_path / "s"), "train", n_train=12, n_val=2, image_size=48)
    for image_id in ds.ids:
        present = set(np.unique(read_mask(ds.mask_path(image_id)))) - {0, 255}
        assert present == set(ds.labels(image_id).tolist())


def test_train_transform_keeps_image_and_mask_aligned():
    mask = np.zeros((40, 50), np.uint8)
    mask[10:30, 5:25] = 1
    image = np.where(mask[..., None] == 1, 200, 20).astype(np.uint8).repeat(3, axis=2)
    t = train_transform(48, mean=(0, 0, 0), std=(1, 1, 1), scale_range=(0.8, 1.6), seed=0)
    for _ in range(10):
        out = t(image=image, mask=mask)
        img, m = out["image"][..., 0], out["mask"]
        # bilinear resampling blends a one-pixel rim; a misaligned mask would miss far more
        assert np.mean(img[m == 1] > 150 / 255) > 0.9 and np.mean(img[m == 0] < 60 / 255) > 0.9
        assert np.all(img[m == 255] == 0)  # padding: image 0, mask ignore


def test_datamodule_batches(tmp_path):
    common = dict(dataset="synthetic", root=str(tmp_path / "s"), crop_size=32, batch_size=4,
                  dataset_kwargs={"n_train": 8, "n_val": 2, "image_size": 48})
    cls = next(iter(WSSSDataModule(task="cls", **common).train_dataloader()))
    assert cls["image"].shape == (4, 3, 32, 32) and cls["label"].shape == (4, len(CLASSES) - 1)
    seg_val = next(iter(WSSSDataModule(task="seg", **common).val_dataloader()))
    assert seg_val["image"].shape == (1, 3, 48, 48) and seg_val["mask"].shape == (1, 48, 48)
