"""Speed and size benchmarks: ours against the reference on the same input, ratios from one run; and
the quality of the whole pipeline on a real folder dataset.

    python scripts/bench.py [cams|pseudo|train|export|walk|all] [--repeats N]
    python scripts/bench.py train --data DIR
    python scripts/bench.py quality --data DIR [--config configs/ccp9.yaml] [--out runs/bench_quality]

``cams``: all-positive-class CAMs for 8 images at 224 px with 3 classes each, ResNet-50 (timm, random
init, eval), CPU: our ``gradcam`` vs pytorch-grad-cam doing the same job (one call per class slot),
our ``cam`` vs a no-grad forward, our ``gradcam`` vs one forward + backward of the whole model.
``pseudo``: pseudo-mask throughput with the worker pool vs a plain single-process loop over
pydensecrf2 on the same CAM files, and vs that loop run in one process per core at once (what the
machine gives that many independent processes just then: the pool's ceiling); CAM storage per image
vs float32 all-class maps.
``train``: images per second of the real training stages (``run_train_cls`` / ``run_train_seg``: Lightning
module, datamodule, augmentation, logging, checkpointing; steady state, after a warm-up) against a bare
loop over the same model, batch shape and optimiser on batches prepared in advance (the compute limit),
at the demo's settings and at 256 px (``--data DIR``: the 256 px rows on that folder dataset's photos,
decoded from their files, instead of synthetic 320 px images); and that bare loop again with the
weights in NCHW order (the speed-up of ``trainer.channels_last``). Each row runs the stage and its two
bare loops in turn ``--repeats`` times and prints the medians (the ratios are medians of each turn's
ratio): one 32-step window moves by about 0.15 on a shared machine.
``export``: the ``cams`` stage (decode, multi-scale + flip, CAM method, files) against the bare no-grad
forwards its scales need on prepared tensors, and the stage with one loader worker against its CPU
default of none.
``walk``: the random walk of ``wsss pseudo`` (boundary network, 2^4 steps with the walked background,
PAR; ``OUT/cams_rw`` files) over the worker pool against one process, on the same images.
``quality`` (not part of ``all``): ``wsss pipeline`` on the folder dataset DIR with the budget of
``--config`` (its step counts and sizes; ``affinity``, ``pseudo.par`` and the fully supervised segmenter
are switched on), then the seed CAM, +PAR, +random walk, +CRF (train split), segmenter and fully
supervised (val) mIoU and the wall seconds of every stage. It resumes like the pipeline.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import os
import shutil
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


def timed_interleaved(fns: list, repeats: int) -> list[float]:
    """Median wall time of each of ``fns``, called in turn ``repeats`` times after one warm-up each, so
    that a machine whose speed drifts slows them alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


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

        def loop(out: Path | None = None):
            out = out or tmp / f"loop{next(runs)}"
            for image_id in ids:
                cams, class_ids = load_cams(tmp / "cams" / f"{image_id}.npz")
                image = np.asarray(Image.open(dataset.image_path(image_id)).convert("RGB"))
                write_mask(out / f"{image_id}.png", crf_mask(image, cams, class_ids, 0.3))

        def independent_loops():
            run = next(runs)
            processes = [mp.get_context("fork").Process(target=loop, args=(tmp / f"loops{run}_{k}",))
                         for k in range(workers)]
            for process in processes:
                process.start()
            for process in processes:
                process.join()

        t_pool, t_loop, t_loops = timed_interleaved([pool, loop, independent_loops], repeats)
        ours = os.path.getsize(tmp / "cams" / f"{ids[0]}.npz")
        np.save(tmp / "all.npy", rng.random((20, size, size), dtype=np.float32))
        full = os.path.getsize(tmp / "all.npy")
    print(f"pseudo: {n} images {size}x{size}, 3 classes, dense CRF on, {workers} workers")
    table([("pool", f"{n / t_pool:8.1f} img/s"), ("single-process loop", f"{n / t_loop:8.1f} img/s"),
           (f"{workers} independent loops at once", f"{workers * n / t_loops:8.1f} img/s"),
           ("pool / loop throughput", f"{t_loop / t_pool:.2f}x   goal near {workers} (cores)"),
           (f"{workers} loops at once / loop (the machine's ceiling)", f"{workers * t_loop / t_loops:.2f}x"),
           (f"pool / {workers} loops at once", f"{t_loops / (workers * t_pool):.2f}x   goal near 1"),
           ("CAM file per image (npz float16, 3 classes)", f"{ours / 1024:8.1f} KiB"),
           ("float32 all-class maps (20 classes)", f"{full / 1024:8.1f} KiB"),
           ("size ratio float32 all-class / ours", f"{full / ours:.1f}x")])


def bench_walk(repeats: int) -> None:
    from PIL import Image

    from wsss.affinity.network import AffinityNet
    from wsss.config import AffinityConfig
    from wsss.pseudo import save_cams
    from wsss.pseudo.labeler import run_pool
    from wsss.stages.pseudo_rw import WalkJob, walk_one, walk_settings

    n, (h, w) = 24, (240, 320)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        net = AffinityNet("efficientnet_lite0")
        ckpt = tmp / "affinity.ckpt"
        torch.save({"hyper_parameters": {"model_config": net.config},
                    "state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}}, ckpt)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp / f"{i}.jpg")
            save_cams(tmp / f"{i}.npz", rng.random((3, h, w), dtype=np.float32), np.array([1, 4, 7]))
        runs = itertools.count()
        settings = walk_settings(AffinityConfig(exp_times=4, rw_background="walk", rw_bg_power=0.8, rw_par=True))

        def walk(processes: int):
            out = tmp / f"out{next(runs)}"
            jobs = [WalkJob(str(i), tmp / f"{i}.npz", tmp / f"{i}.jpg", out / f"{i}.npz", ckpt, True, settings)
                    for i in range(n)]
            run_pool(walk_one, jobs, processes, "walk", progress=False)

        t_pool, t_loop = timed_interleaved([lambda: walk(workers), lambda: walk(1)], repeats)
    print(f"walk: {n} images {w}x{h}, 3 classes, 2^4 steps, walked background, PAR, {workers} workers")
    table([("pool", f"{n / t_pool:8.1f} img/s"), ("single process", f"{n / t_loop:8.1f} img/s"),
           ("pool / single-process throughput", f"{t_loop / t_pool:.2f}x")])


def stage_throughput(run, cfg, section, warmup: int) -> tuple[float, object]:
    """Images per second of ``run(cfg)`` between the end of step ``warmup`` and the last step, and the
    trained Lightning module (to build the bare loop from)."""
    import pytorch_lightning as pl

    from wsss.stages import training

    class Clock(pl.Callback):
        """Wall time at the end of every training step; the module being trained."""

        def __init__(self):
            self.times: list[float] = []
            self.module = None

        def on_fit_start(self, trainer, pl_module):
            self.module = pl_module

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.times.append(time.perf_counter())

    clock = Clock()
    real_make = training.make_trainer

    def make(*args, **kwargs):
        trainer = real_make(*args, **kwargs)
        trainer.callbacks.append(clock)
        return trainer

    training.make_trainer = make
    try:
        run(cfg)
    finally:
        training.make_trainer = real_make
    t = clock.times
    return (len(t) - 1 - warmup) * section.batch_size / (t[-1] - t[warmup]), clock.module


def bare_throughput(module, batches: list[dict], steps: int, loss_fn) -> float:
    """Images per second of forward + loss + backward + optimiser step over prepared ``batches``."""
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    model = module.model.train()

    def step(batch):
        loss = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()

    for batch in batches[:2]:
        step(batch)
    start = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)])
    return steps * batches[0]["image"].shape[0] / (time.perf_counter() - start)


def train_turn(stage: str, crop: int, batch: int, image_size: int, data: str | None, out: str, synthetic: str,
               steps: int, warmup: int) -> tuple[float, float, float]:
    """One turn of a ``train`` row: images per second of the stage, of the bare loop (NHWC) and of the
    bare loop with NCHW weights, on the same model, batch shape and optimiser."""
    import torch.nn.functional as F

    from wsss.config import RunConfig
    from wsss.models.network import set_memory_format
    from wsss.stages.common import datamodule_for
    from wsss.stages.train_cls import run_train_cls
    from wsss.stages.train_seg import run_train_seg
    from wsss.train.segmentation import segmentation_loss

    cfg = RunConfig(out=out, progress=False)
    if data and crop == 256:
        cfg.data.name, cfg.data.root = "folder", data
    else:
        cfg.data.root = synthetic
        cfg.data.kwargs = {"n_train": 200, "n_val": 20, "image_size": image_size}
    cfg.trainer.accelerator = "cpu"
    section = cfg.classifier if stage == "classifier" else cfg.segmenter
    section.crop_size, section.batch_size, section.max_steps = crop, batch, steps
    if stage == "classifier":
        stage_ips, module = stage_throughput(run_train_cls, cfg, section, warmup)
        loss = lambda m, b: F.multilabel_soft_margin_loss(m(b["image"]), b["label"])  # noqa: E731
    else:
        stage_ips, module = stage_throughput(lambda c: run_train_seg(c, "gt"), cfg, section, warmup)
        loss = lambda m, b: segmentation_loss(m(b["image"]), b["mask"])  # noqa: E731
    datamodule = datamodule_for(cfg, section, "cls" if stage == "classifier" else "seg",
                                module.model.mean, module.model.std)
    loader = iter(datamodule.train_dataloader())
    batches = [next(loader) for _ in range(4)]
    bare_ips = bare_throughput(module, batches, steps - warmup, loss)
    nchw_ips = bare_throughput(set_memory_format(module, False), batches, steps - warmup, loss)
    return stage_ips, bare_ips, nchw_ips


def bench_train(repeats: int, data: str | None = None) -> None:
    settings = [
        ("classifier", "demo", 128, 16, 128),
        ("classifier", "256 px", 256, 8, 320),
        ("segmenter", "demo", 128, 16, 128),
        ("segmenter", "256 px", 256, 8, 320),
    ]
    steps, warmup = 40, 8
    photos = f"photos of {data}" if data else "synthetic data"
    print(f"train: EfficientNet-Lite0 (ImageNet weights), demo rows synthetic, 256 px rows {photos}, "
          f"{steps} steps, timed after step {warmup}, median of {repeats} runs of each (stage, bare loop "
          "NHWC, bare loop NCHW in turn)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for stage, name, crop, batch, image_size in settings:
            runs = [train_turn(stage, crop, batch, image_size, data, f"{tmp}/{stage}_{crop}_{repeat}",
                               f"{tmp}/synthetic_{image_size}", steps, warmup) for repeat in range(repeats)]
            medians = [statistics.median(column) for column in zip(*runs)]
            ratios = [statistics.median(b / s for s, b, _ in runs), statistics.median(b / n for _, b, n in runs)]
            rows.append((f"{stage} {name} ({crop} px, batch {batch})", *medians, *ratios))
    for label, stage_ips, bare_ips, nchw_ips, _, _ in rows:
        print(f"  {label:<36} stage {stage_ips:6.1f} img/s   bare loop {bare_ips:6.1f} img/s   "
              f"bare loop NCHW {nchw_ips:6.1f} img/s")
    for label, *_, stage_ratio, _ in rows:
        print(f"  {label.split(' (')[0] + ' stage / bare loop':<36} {stage_ratio:.2f}x   goal <= 1.15")
    for label, *_, nhwc_ratio in rows:
        print(f"  {label.split(' (')[0] + ' bare loop NHWC / NCHW':<36} {nhwc_ratio:.2f}x   "
              "(trainer.channels_last speed-up)")


def bench_export(repeats: int) -> None:
    import torch.nn.functional as F

    from wsss.config import RunConfig
    from wsss.data.transforms import normalise_image
    from wsss.stages.cams import cam_dir, load_classifier, run_cams
    from wsss.stages.common import dataset_for
    from wsss.stages.train_cls import run_train_cls

    with tempfile.TemporaryDirectory() as tmp:
        cfg = RunConfig(out=f"{tmp}/run", progress=False)
        cfg.data.root = f"{tmp}/synthetic"
        # 240 images: the stage's setup (trainer, checkpoint, files) is about a second, which at 60
        # images weighed a third of the forwards and which an export of thousands does not see
        cfg.data.kwargs = {"n_train": 240, "n_val": 10}
        cfg.trainer.accelerator = "cpu"
        cfg.classifier.max_steps = 2
        run_train_cls(cfg)
        model = load_classifier(cfg)
        dataset = dataset_for(cfg, cfg.data.cam_split)
        images = [normalise_image(dataset.load_image(i), model.mean, model.std)[None] for i in dataset.ids]
        scales = cfg.cams.scales

        def bare():
            with torch.no_grad():
                for x in images:
                    for scale in scales:
                        y = x if scale == 1.0 else F.interpolate(x, scale_factor=scale, mode="bilinear",
                                                                 align_corners=False)
                        model(torch.cat([y, y.flip(-1)]) if cfg.cams.flip else y)

        runs = iter(range(10 ** 6))

        def stage(num_workers: int | None = None):
            cfg.out, cfg.data.num_workers = f"{tmp}/run{next(runs)}", num_workers
            shutil.copytree(f"{tmp}/run/classifier", f"{cfg.out}/classifier")
            (Path(cfg.out) / "stages.json").write_text((Path(tmp) / "run" / "stages.json").read_text())
            run_cams(cfg)
            assert len(list(cam_dir(cfg).glob("*.npz"))) == len(dataset)

        t_stage, t_worker, t_bare = timed_interleaved([stage, lambda: stage(1), bare], repeats)
    n = len(dataset)
    print(f"export: {n} synthetic images 128 px, EfficientNet-Lite0, method {cfg.cams.method}, scales {scales}, "
          f"flip {cfg.cams.flip}")
    table([("cams stage", f"{n / t_stage:8.1f} img/s"), ("cams stage, one loader worker", f"{n / t_worker:8.1f} img/s"),
           ("bare forwards", f"{n / t_bare:8.1f} img/s"),
           ("cams stage / bare forwards", f"{t_stage / t_bare:.2f}x   goal <= 1.25"),
           ("one loader worker / none (stage time)", f"{t_worker / t_stage:.2f}x")])


QUALITY_ROWS = [("seed CAM (best threshold)", "pseudo", "seed_cam_miou"),
                ("+ PAR", "pseudo", "pseudo_par_miou"),
                ("+ random walk", "pseudo_rw", "pseudo_rw_miou"),
                ("+ dense CRF", "pseudo", "pseudo_crf_miou")]


def walk_detail(affinity) -> str:
    """What the random-walk row's label adds: the background that competes with the walked classes, the
    CAM power before the walk, and PAR."""
    walk = {"threshold": "IRN", "walk": "walked background, PSA"}[affinity.rw_background]
    power = f", CAMs ** {affinity.rw_cam_power:g}" if affinity.rw_cam_power != 1 else ""
    return f" ({walk}{power})" + ", then PAR" * affinity.rw_par


def bench_quality(data: str, config: str, out: str | None) -> None:
    from wsss.cli import parse_run_config
    from wsss.stages.pipeline import run_pipeline
    from wsss.stages.records import read_stages
    from wsss.stages.train_seg import masks_name

    args = ["--config", config, "--data.name", "folder", "--data.root", data, "--affinity.enabled", "true",
            "--pseudo.par", "true", "--segmenter.fully_supervised", "true", "--report", "false"]
    if out:
        args += ["--out", out]
    cfg, _ = parse_run_config("pipeline", args, source=f"bench quality ({config})")
    start = time.perf_counter()
    run_pipeline(cfg)
    wall = time.perf_counter() - start
    records = read_stages(cfg.out_dir)
    seg = f"train_seg_{masks_name(cfg.segmenter.masks)}"
    rows = [(label + walk_detail(cfg.affinity) * (stage == "pseudo_rw"), records.get(stage, {}).get(key))
            for label, stage, key in QUALITY_ROWS]
    rows += [(f"segmenter on {cfg.segmenter.masks} (val)", records.get(seg, {}).get("miou")),
             ("fully supervised (val)", records.get("train_seg_gt", {}).get("miou"))]
    c, a, g = cfg.classifier, cfg.affinity, cfg.segmenter
    print(f"quality: {data} ({cfg.data.cam_split} for pseudo masks, {cfg.data.val_split} for segmenters), "
          f"{os.cpu_count()} cores, torch {torch.get_num_threads()} threads")
    print(f"budget: classifier {c.backbone} {c.max_steps} steps x {c.batch_size} @ {c.crop_size} px; "
          f"affinity {a.backbone} {a.max_steps} x {a.batch_size} @ {a.crop_size} px; "
          f"segmenters {g.backbone} {g.max_steps} x {g.batch_size} @ {g.crop_size} px")
    map_ = records.get("train_cls", {}).get("metrics", {}).get("val/mAP")
    table([("classifier val mAP", "-" if map_ is None else f"{map_:.3f}")]
          + [(label, "-" if v is None else f"{v:6.2f} mIoU") for label, v in rows])
    print("wall seconds per stage (this run; a stage made earlier keeps its recorded time)")
    table([(name, f"{rec.get('seconds', 0):8.0f} s") for name, rec in records.items() if rec.get("seconds")]
          + [("this invocation", f"{wall:8.0f} s")])


SECTIONS = {"cams": lambda args: bench_cams(args.repeats), "pseudo": lambda args: bench_pseudo(args.repeats),
            "train": lambda args: bench_train(args.repeats, args.data),
            "export": lambda args: bench_export(args.repeats), "walk": lambda args: bench_walk(args.repeats)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", nargs="?", default="all", choices=[*SECTIONS, "all", "quality"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", help="quality: the folder dataset (images/, classes.txt, labels.csv, masks/); "
                                       "train: the folder whose photos the 256 px rows train on")
    parser.add_argument("--config", default="configs/ccp9.yaml", help="quality: the run configuration (budget)")
    parser.add_argument("--out", default=None, help="quality: output folder (default: the config's out)")
    args = parser.parse_args()
    from wsss.cli import quiet_third_party_noise

    quiet_third_party_noise()
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.section == "quality":
        if not args.data:
            parser.error("quality needs --data DIR (a folder dataset with masks)")
        bench_quality(args.data, args.config, args.out)
        return
    for name, fn in SECTIONS.items():
        if args.section in (name, "all"):
            fn(args)


if __name__ == "__main__":
    main()
