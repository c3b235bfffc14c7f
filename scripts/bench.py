"""Speed and size benchmarks: ours against the reference on the same input, ratios from one run.

    python scripts/bench.py [cams|pseudo|all] [--repeats N]

``cams``: all-positive-class CAMs for 8 images at 224 px with 3 classes each, ResNet-50 (timm, random
init, eval), CPU: our ``gradcam`` vs pytorch-grad-cam doing the same job (one call per class slot),
our ``cam`` vs a no-grad forward, our ``gradcam`` vs one forward + backward of the whole model.
``pseudo``: pseudo-mask throughput with the worker pool vs a plain single-process loop over
pydensecrf2 on the same CAM files, and CAM storage per image vs float32 all-class maps.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def timed(fn, repeats: int) -> float:
    """Median wall time of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def table(rows: list[tuple[str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def bench_cams(repeats: int) -> None:
    import timm
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from wsss.cams import compute_cams

    torch.manual_seed(0)
    model = timm.create_model("resnet50", pretrained=False).eval()
    images = torch.randn(8, 3, 224, 224)
    targets = torch.randint(0, 1000, (8, 3))

    def ours_gradcam():
        compute_cams(model, images, targets, "layer4", method="gradcam", normalize="minmax")

    def ours_cam():
        compute_cams(model, images, targets, "layer4", method="cam", normalize="max")

    def forward():
        with torch.no_grad():
            model(images)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        logits = model(images)
        logits.gather(1, targets).sum().backward()

    pgc = GradCAM(model=model, target_layers=[model.layer4])

    def reference_gradcam():
        for k in range(targets.shape[1]):
            pgc(input_tensor=images, targets=[ClassifierOutputTarget(int(c)) for c in targets[:, k]])

    t = {name: timed(fn, repeats) for name, fn in [
        ("ours gradcam", ours_gradcam), ("pytorch-grad-cam gradcam", reference_gradcam), ("ours cam", ours_cam),
        ("no-grad forward", forward), ("forward + backward", forward_backward)]}
    print("cams: 8 images x 3 classes, 224 px, ResNet-50, CPU")
    table([(k, f"{v * 1000:8.1f} ms") for k, v in t.items()])
    table([
        ("pytorch-grad-cam / ours (gradcam)", f"{t['pytorch-grad-cam gradcam'] / t['ours gradcam']:.2f}x   goal >= 5"),
        ("ours cam / no-grad forward", f"{t['ours cam'] / t['no-grad forward']:.2f}x   goal <= 1.2"),
        ("ours gradcam / forward+backward", f"{t['ours gradcam'] / t['forward + backward']:.2f}x   goal <= 2.0"),
    ])


def bench_pseudo(repeats: int) -> None:
    from PIL import Image

    from wsss.data.palette import write_mask
    from wsss.data.voc import VOCDataset
    from wsss.pseudo import save_cams
    from wsss.pseudo.crf import crf_mask
    from wsss.pseudo.labeler import make_pseudo_masks
    from wsss.pseudo.storage import load_cams

    n, size = 48, 256
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        voc = tmp / "VOCdevkit" / "VOC2012"
        (voc / "JPEGImages").mkdir(parents=True)
        (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
        ids = [f"img{i:03d}" for i in range(n)]
        yy, xx = np.mgrid[0:size, 0:size]
        for image_id in ids:
            mask = np.zeros((size, size), np.uint8)
            cams = []
            for c in (3, 8, 15):
                cy, cx, r = rng.integers(40, size - 40, 2).tolist() + [int(rng.integers(20, 60))]
                region = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
                mask[region] = c
                cams.append(np.clip(1.2 - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / (1.5 * r), 0, 1))
            image = (rng.normal(0, 8, (size, size, 3)) + 60 + 60 * (mask[..., None] % 4)).clip(0, 255)
            Image.fromarray(image.astype(np.uint8)).save(voc / "JPEGImages" / f"{image_id}.jpg")
            (voc / "SegmentationClass").mkdir(exist_ok=True)
            write_mask(voc / "SegmentationClass" / f"{image_id}.png", mask)
            save_cams(tmp / "cams" / f"{image_id}.npz", np.stack(cams).astype(np.float32), np.array([3, 8, 15]))
        (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids) + "\n")
        dataset = VOCDataset(tmp, "train")
        workers = os.cpu_count() or 1
        runs = iter(range(10 ** 6))

        def pool():
            make_pseudo_masks(tmp / "cams", dataset, tmp / f"pool{next(runs)}", bg_threshold=0.3, crf=True,
                              workers=workers, progress=False)

        def loop():
            out = tmp / f"loop{next(runs)}"
            for image_id in ids:
                cams, class_ids = load_cams(tmp / "cams" / f"{image_id}.npz")
                image = np.asarray(Image.open(dataset.image_path(image_id)).convert("RGB"))
                write_mask(out / f"{image_id}.png", crf_mask(image, cams, class_ids, 0.3))

        t_pool, t_loop = timed(pool, repeats), timed(loop, repeats)
        ours = os.path.getsize(tmp / "cams" / f"{ids[0]}.npz")
        np.save(tmp / "all.npy", rng.random((20, size, size), dtype=np.float32))
        full = os.path.getsize(tmp / "all.npy")
    print(f"pseudo: {n} images {size}x{size}, 3 classes, dense CRF on, {workers} workers")
    table([("pool", f"{n / t_pool:8.1f} img/s"), ("single-process loop", f"{n / t_loop:8.1f} img/s"),
           ("pool / loop throughput", f"{t_loop / t_pool:.2f}x   goal near {workers} (cores)"),
           ("CAM file per image (npz float16, 3 classes)", f"{ours / 1024:8.1f} KiB"),
           ("float32 all-class maps (20 classes)", f"{full / 1024:8.1f} KiB"),
           ("size ratio float32 all-class / ours", f"{full / ours:.1f}x")])


SECTIONS = {"cams": bench_cams, "pseudo": bench_pseudo}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", nargs="?", default="all", choices=[*SECTIONS, "all"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, fn in SECTIONS.items():
        if args.section in (name, "all"):
            fn(args.repeats)


if __name__ == "__main__":
    main()
