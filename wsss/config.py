"""The configuration schema shared by every ``wsss`` subcommand.

One YAML file (``configs/**.yaml``) describes a whole run: the dataset, the classifier, CAM export,
pseudo masks, the segmenter and the Lightning trainer. Every field has a default that works on the
built-in synthetic data, so ``wsss demo`` needs no file at all. The CLI (:mod:`wsss.cli`) parses these
dataclasses with jsonargparse, so any field can be overridden on the command line
(``--classifier.max_steps 200``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


@dataclass
class DataConfig:
    """Which dataset and splits to use.

    Args:
        name: dataset family: ``synthetic`` (built-in, generated on first use), ``voc``, ``coco`` or
            ``folder`` (your own data, layout in ``data/README.md``).
        root: dataset root (for VOC the folder holding ``VOCdevkit``).
        train_split: split the classifier and the segmenter train on.
        val_split: split the segmenter is evaluated on.
        cam_split: split CAMs and pseudo masks are made for (pseudo-label mIoU is reported on it).
        kwargs: extra keyword arguments of the dataset class (e.g. synthetic generator settings).
        num_workers: DataLoader worker processes of the training, validation and CAM-export loaders;
            None = one per core beyond the first, at most 4 (decoding and augmentation then overlap
            the model's steps instead of adding to them); for the CAM export on the CPU None is none
            (:func:`wsss.processes.export_loader_workers`).
        skip_bad_images: drop unreadable images (logged) instead of stopping with an error.
    """

    name: str = "synthetic"
    root: str = "data/synthetic"
    train_split: str = "train"
    val_split: str = "val"
    cam_split: str = "train"
    kwargs: dict[str, Any] = field(default_factory=dict)
    num_workers: int | None = None
    skip_bad_images: bool = False


@dataclass
class TrainerConfig:
    """Lightning trainer settings shared by the classifier and segmenter stages.

    Args:
        accelerator: ``cpu``, ``gpu``, ``auto``... (passed to Lightning unchanged).
        devices: device count or ``auto``; several devices run DDP.
        strategy: Lightning strategy (``auto``, ``ddp``...).
        num_nodes: nodes for multi-node DDP.
        precision: Lightning precision string.
        loggers: any of ``csv``, ``tensorboard``, ``wandb`` (wandb runs offline when
            ``WANDB_MODE=offline``; it is never required).
        wandb_project: project name for the wandb logger.
        log_every_n_steps: logging period.
        val_every_n_steps: classifier validation period in steps (None = once, after the last step).
        deterministic: ask Lightning/torch for deterministic algorithms.
        channels_last: keep convolution weights, and so activations, in NHWC order
            (:func:`wsss.models.network.set_memory_format`) when training, exporting CAMs, walking and
            evaluating or predicting with the segmenter: oneDNN on the CPU and cuDNN on the GPU run
            NHWC convolutions faster (``scripts/bench.py train``). Results differ from NCHW only by
            float rounding, so like the accelerator it is not part of a fingerprint.
    """

    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    loggers: list[str] = field(default_factory=lambda: ["csv", "tensorboard"])
    wandb_project: str = "wsss"
    log_every_n_steps: int = 10
    val_every_n_steps: int | None = None
    deterministic: bool = False
    channels_last: bool = True


@dataclass
class NetworkTrainingConfig:
    """The network and optimisation settings the classifier and the segmenter stages share.

    Args:
        backbone: a name of ``wsss.models.BACKBONES``.
        pretrained: False, True (weights shipped with a package or at the documented path) or a path
            to a local weight file.
        backbone_kwargs: extra backbone arguments (e.g. ``depth`` for ``vit_custom``).
        optimizer: ``sgd`` or ``adamw``.
        lr: base learning rate (backbone); new layers get ``lr * head_lr_mult``.
        head_lr_mult: learning-rate multiplier of the new layers.
        weight_decay: weight decay.
        momentum: SGD momentum.
        warmup_steps: linear warm-up steps.
        max_steps: training iterations.
        batch_size: images per step (per device).
        crop_size: square training crop.
        scale_range: random rescale range before cropping.
    """

    section: ClassVar[str] = "network"

    backbone: str = "efficientnet_lite0"
    pretrained: bool | str = True
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "sgd"
    lr: float = 0.01
    head_lr_mult: float = 10.0
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_steps: int = 20
    max_steps: int = 250
    batch_size: int = 16
    crop_size: int = 128
    scale_range: tuple[float, float] = (0.7, 1.3)

    def __post_init__(self) -> None:
        from wsss.errors import ConfigError

        section = self.section
        for name, minimum in (("max_steps", 1), ("batch_size", 1), ("crop_size", 1), ("warmup_steps", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < minimum:
                raise ConfigError(f"{section}.{name} must be an integer >= {minimum}; got {value!r}")
        if self.lr <= 0:
            raise ConfigError(f"{section}.lr must be > 0; got {self.lr!r}")

    def module_kwargs(self) -> dict[str, Any]:
        """The backbone and optimisation arguments of ``ClassifierModule`` / ``SegmenterModule``."""
        return dict(backbone=self.backbone, pretrained=self.pretrained, backbone_kwargs=dict(self.backbone_kwargs),
                    optimizer=self.optimizer, lr=self.lr, weight_decay=self.weight_decay, momentum=self.momentum,
                    head_lr_mult=self.head_lr_mult, warmup_steps=self.warmup_steps, max_steps=self.max_steps)


@dataclass
class ClassifierConfig(NetworkTrainingConfig):
    """Image-level classifier (stage ``train-cls``); the shared fields are those of
    :class:`NetworkTrainingConfig`.

    Args:
        pooling: ``gap``, ``gmp`` or ``softmax`` (softmax-with-temperature pooling).
        temperature: temperature of ``softmax`` pooling.
        aux_layer: block/stage index of the auxiliary classifier (None = no auxiliary head).
        aux_weight: weight of the auxiliary classification loss.
        refiners: refiner configs, each a dict with a ``name`` from ``wsss.refiners.REFINERS``.
        prior_bias: add a learned per-class offset to the logits, left out of every CAM. A class present
            on nearly every image (CCP-9's footwear: 96 %) then need not be pushed up by its features
            over the whole map. Our addition, not from a paper (WSSS heads are bias-free).
    """

    section: ClassVar[str] = "classifier"

    lr: float = 0.02
    pooling: str = "gap"
    temperature: float = 1.0
    aux_layer: int | None = None
    aux_weight: float = 1.0
    refiners: list[dict[str, Any]] = field(default_factory=list)
    prior_bias: bool = False


@dataclass
class CamConfig:
    """CAM export (stage ``cams``).

    Args:
        method: a name of ``wsss.cams.CAM_METHODS``.
        target_layer: dotted module name the method reads (``feature_map`` = the classifier's input map).
        preset: multi-scale scheme: ``irn`` (1.0/0.5/1.5/2.0, flips summed) or ``toco``
            (1.0/0.5/1.5, flips by max).
        scales: override the preset's scales.
        flip: add horizontally flipped inputs.
        denoise: ``tam`` applies TAM's rank Gaussian filter to every raw map (None = off).
        overlay_methods: CAM methods drawn side by side in the report.
    """

    method: str = "cam"
    target_layer: str = "feature_map"
    preset: str = "irn"
    scales: list[float] | None = field(default_factory=lambda: [1.0, 0.5, 1.5])
    flip: bool = True
    denoise: str | None = None
    overlay_methods: list[str] = field(default_factory=lambda: ["cam", "gradcam", "gradcampp", "layercam"])


@dataclass
class ClipConfig:
    """Frozen CLIP towers of the training-free CAM methods ``excel`` and ``clip_es``
    (:mod:`wsss.refiners.excel`); read only when ``cams.method`` is one of them.

    Args:
        model: open_clip model name (OpenAI weights use QuickGELU: ``ViT-B-16-quickgelu``).
        weights: local weight file of ``model`` (e.g. ``open_clip_pytorch_model.bin`` of
            ``timm/vit_base_patch16_clip_224.openai``); nothing is downloaded.
        model_cfg: an open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``) for a randomly
            initialised model instead of ``weights`` (tests and the demo: its CAMs mean nothing).
        text_file: class names, synonyms, descriptions and background words (None =
            ``data/text/<data.name>.json``; a missing file falls back to the bare class names).
        text_cache: cache of the encoded texts and the attribute bank (None = ``OUT/clip_text.pt``).
        n_clusters: K-means clusters of the attribute bank (ExCEL: 112 VOC, 224 COCO; 0 = no enrichment).
        keep: share of the attributes kept per class (ExCEL 0.9).
        svc_layers: calibrated last blocks of ExCEL's Static Visual Calibration (ExCEL 5).
        class_prior: weight the patch-text scores by the CLS-text softmax (ExCEL's class-token prior).
        feature_norm: ``token`` (ExCEL's code: L2 along the token axis) or ``channel`` before the CAM.
        head_sum_in_calibrated: ExCEL quirk: attention of calibrated blocks is head-summed, of the
            others head-averaged (False: averaged everywhere).
        affinity_layers: last blocks whose attention forms the affinity (ExCEL 6, CLIP-ES 8).
        box_threshold: box-mask threshold ``caa_thre`` of the affinity refinement (ExCEL 0.79 VOC,
            0.88 COCO; CLIP-ES 0.4).
        affinity: apply the attention-affinity refinement.
        par_iter: PAR iterations on the refined CAMs (ExCEL 20; 0 = off).
    """

    model: str = "ViT-B-16-quickgelu"
    weights: str | None = None
    model_cfg: dict[str, Any] = field(default_factory=dict)
    text_file: str | None = None
    text_cache: str | None = None
    n_clusters: int = 112
    keep: float = 0.9
    svc_layers: int = 5
    class_prior: bool = True
    feature_norm: str = "token"
    head_sum_in_calibrated: bool = True
    affinity_layers: int = 6
    box_threshold: float = 0.79
    affinity: bool = True
    par_iter: int = 20


@dataclass
class LvcConfig:
    """ExCEL's Learnable Visual Calibration (stage ``train-lvc``): an adapter and segmentation decoder
    trained on the frozen CLIP's online pseudo labels (CLIP from the ``clip`` section). Defaults are
    ExCEL's VOC settings except the length, batch and crop, which are demo-sized (VOC: 30000 steps,
    batch 4, crop 320, shift from 14000, self labels from 24000).

    Args:
        shift_start: first step of the dynamic shift and the dynamic CAMs.
        self_label_start: first step the affinity target is the decoder's argmax (None = never, COCO).
        aff_weight: weight of the affinity loss.
        radius: pair radius of the affinity loss on the token grid.
        dim: adapter and decoder width.
        decoder_depth: decoder transformer layers.
        decoder_heads: decoder attention heads.
        dropout: adapter Dropout2d.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps.
        warmup_ratio: learning-rate factor at the start of the warm-up.
        max_steps: training iterations.
        power: poly decay power.
        batch_size: images per step (per device).
        crop_size: square training crop.
        scale_range: random rescale range before cropping.
    """

    shift_start: int = 140
    self_label_start: int | None = 240
    aff_weight: float = 0.1
    radius: int = 8
    dim: int = 256
    decoder_depth: int = 3
    decoder_heads: int = 8
    dropout: float = 0.1
    lr: float = 1e-4
    weight_decay: float = 1e-2
    warmup_steps: int = 50
    warmup_ratio: float = 0.01
    max_steps: int = 300
    power: float = 1.0
    batch_size: int = 4
    crop_size: int = 128
    scale_range: tuple[float, float] = (0.5, 2.0)

    def module_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`wsss.refiners.excel.lvc_module.LvcModule`."""
        import dataclasses

        skip = {"batch_size", "crop_size", "scale_range"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}


@dataclass
class PseudoConfig:
    """Pseudo masks from CAMs (stage ``pseudo``).

    Args:
        bg_threshold: background threshold; None = the best threshold of the seed-CAM sweep on the
            CAM split (the sweep needs ground truth; without it 0.25 is used).
        high: with ``low``, the ToCo-style ignore band: ``max >= high`` -> class, ``< low`` -> background,
            between -> 255.
        low: see ``high``.
        bg_power: instead of a constant threshold, the PSA/IRN power background score
            ``(1 - max cam) ** bg_power`` (e.g. 4 to grow, 16 to shrink the background).
        crf: also write dense-CRF refined masks (``pseudo_crf/``).
        crf_n_iter: CRF mean-field iterations.
        crf_gauss_sxy: Gaussian kernel spatial std.
        crf_gauss_compat: Gaussian kernel weight (0 drops it).
        crf_bi_sxy: bilateral kernel spatial std.
        crf_bi_srgb: bilateral kernel colour std.
        crf_bi_compat: bilateral kernel weight (0 drops it).
        workers: worker processes (None = all cores).
        par: also write masks of the PAR-refined CAMs (``pseudo_par/``, :mod:`wsss.affinity.par`), cut
            at the same background threshold.
    """

    bg_threshold: float | None = None
    high: float | None = None
    low: float | None = None
    bg_power: float | None = None
    crf: bool = True
    crf_n_iter: int = 10
    crf_gauss_sxy: float = 1.0
    crf_gauss_compat: float = 1.0
    crf_bi_sxy: float = 121.0
    crf_bi_srgb: float = 5.0
    crf_bi_compat: float = 4.0
    workers: int | None = None
    par: bool = False

    def crf_params(self) -> dict[str, float]:
        """Keyword arguments of :func:`wsss.pseudo.dense_crf`."""
        return dict(n_iter=self.crf_n_iter, gauss_sxy=self.crf_gauss_sxy, gauss_compat=self.crf_gauss_compat,
                    bi_sxy=self.crf_bi_sxy, bi_srgb=self.crf_bi_srgb, bi_compat=self.crf_bi_compat)


RW_BACKGROUNDS = ("threshold", "walk")  # affinity.rw_background; here so that a config needs no torch


@dataclass
class AffinityConfig:
    """IRN-style affinity (Ahn et al., CVPR 2019): stage ``train-aff`` learns class boundaries from the
    inter-pixel relations of the CAMs' confident regions; ``pseudo`` then propagates the CAMs by a
    random walk over them into ``pseudo_rw/``. Defaults are IRN's (``run_sample.py``) except the
    training length, batch and crop, which are demo-sized (IRN: 3 epochs, batch 32, crop 512).

    Args:
        enabled: run ``train-aff`` in ``pipeline`` and the random walk in ``pseudo``.
        backbone: a name of ``wsss.models.BACKBONES`` (frozen, as in IRN).
        pretrained: as ``classifier.pretrained``.
        backbone_kwargs: extra backbone arguments.
        conf_fg_threshold: background score under which the CAM's argmax is confident foreground.
        conf_bg_threshold: background score above every CAM value of confident background.
        conf_crf: refine both confident maps with IRN's label CRF.
        radius: pair radius of the training relations (on the stride-4 grid).
        optimizer: ``sgd`` or ``adamw``.
        lr: learning rate of the boundary layers (poly decay, no warm-up).
        weight_decay: weight decay.
        momentum: SGD momentum (IRN's ``PolyOptimizer`` passes the weight decay in SGD's momentum
            slot, so it trains with momentum 1e-4, i.e. none).
        max_steps: training iterations.
        batch_size: crops per step.
        crop_size: square training crop.
        scale_range: random rescale range before cropping.
        rw_radius: pair radius of the random walk.
        beta: power of the affinities in the transition matrix.
        exp_times: the walk takes ``2 ** exp_times`` steps.
        rw_background: ``threshold`` (IRN): a constant background score competes with the walked
            classes; ``walk`` (PSA, not IRN): ``(1 - max cam) ** rw_bg_power`` is walked with them and
            ``OUT/cams_rw`` holds ``fg / (fg + bg)`` (0.5 = PSA's argmax).
        rw_bg_power: PSA's ``alpha`` (16 for VOC CAMs); only with ``walk``.
        rw_cam_power: the max-normalised stride-4 class CAMs are raised to this power before the walk,
            so that weak activations weigh less in the walk's averages (1: IRN; AdvCAM's ``step/make_sem_seg_labels.py`` uses
            1.5); ``walk``'s background score is made from the CAMs before it.
        rw_par: PAR on the walked maps (``threshold``: at the threshold found before PAR; ``walk``:
            background and classes together, before the sweep). Not IRN [proj-default: off].
        rw_bg_threshold: background score of the walked maps; None = the best threshold of a sweep
            on the CAM split (needs ground truth), else 0.25 (``threshold``) or 0.5 (``walk``).
    """

    enabled: bool = False
    backbone: str = "efficientnet_lite0"
    pretrained: bool | str = True
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    conf_fg_threshold: float = 0.30
    conf_bg_threshold: float = 0.05
    conf_crf: bool = True
    radius: int = 10
    optimizer: str = "sgd"
    lr: float = 0.1
    weight_decay: float = 1e-4
    momentum: float = 1e-4
    max_steps: int = 250
    batch_size: int = 16
    crop_size: int = 128
    scale_range: tuple[float, float] = (0.5, 1.5)
    rw_radius: int = 5
    beta: float = 10.0
    exp_times: int = 8
    rw_background: str = "threshold"
    rw_bg_power: float = 16.0
    rw_cam_power: float = 1.0
    rw_par: bool = False
    rw_bg_threshold: float | None = 0.25

    def __post_init__(self) -> None:
        from wsss.errors import ConfigError

        if self.rw_background not in RW_BACKGROUNDS:
            raise ConfigError(f"affinity.rw_background must be one of {', '.join(RW_BACKGROUNDS)}; "
                              f"got {self.rw_background!r}")
        if self.rw_bg_power <= 0:
            raise ConfigError(f"affinity.rw_bg_power must be > 0; got {self.rw_bg_power!r}")
        if self.rw_cam_power <= 0:
            raise ConfigError(f"affinity.rw_cam_power must be > 0; got {self.rw_cam_power!r}")


@dataclass
class SegmenterConfig(NetworkTrainingConfig):
    """Segmentation network trained on pseudo masks (stage ``train-seg``); the shared fields are those
    of :class:`NetworkTrainingConfig`.

    Args:
        masks: which masks to train on: ``pseudo_crf``, ``pseudo``, ``pseudo_par`` (with
            ``pseudo.par``), ``pseudo_rw`` (with ``affinity.enabled``), ``gt`` (fully supervised upper
            bound) or a folder of ``<id>.png`` masks.
        fully_supervised: in ``pipeline``, also train the same segmenter on ground truth.
        head: a name of ``wsss.models.seg_heads.SEG_HEADS``.
        head_kwargs: extra head arguments.
        eval_scales: inference scales (multi-scale fusion when several).
        eval_flip: add flipped inputs at inference.
        eval_crf: dense CRF on the segmenter's softmax at inference.
    """

    section: ClassVar[str] = "segmenter"

    masks: str = "pseudo_crf"
    fully_supervised: bool = True
    head: str = "segformer"
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    eval_scales: list[float] = field(default_factory=lambda: [1.0])
    eval_flip: bool = False
    eval_crf: bool = False


@dataclass
class RunConfig:
    """A whole run: every stage reads the section it needs.

    Args:
        out: output folder; each stage writes a subfolder (``classifier/``, ``cams/``, ``pseudo/``,
            ``pseudo_crf/``, ``segmenter/``, ``report/``) and ``summary.json``.
        seed: global seed (data order, initialisation, augmentation).
        data: dataset section.
        trainer: Lightning trainer section.
        classifier: classifier section.
        cams: CAM export section.
        clip: CLIP towers of the training-free CAM methods ``excel`` and ``clip_es``.
        lvc: ExCEL's Learnable Visual Calibration (stage ``train-lvc``).
        pseudo: pseudo-mask section.
        affinity: IRN-style affinity section (off by default).
        segmenter: segmenter section.
        report: write the HTML report at the end of ``pipeline``.
        progress: show progress bars.
    """

    out: str = "runs/demo"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    cams: CamConfig = field(default_factory=CamConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    lvc: LvcConfig = field(default_factory=LvcConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    affinity: AffinityConfig = field(default_factory=AffinityConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    report: bool = True
    progress: bool = True

    @property
    def out_dir(self) -> Path:
        return Path(self.out)



def _field_tree(cls: type = RunConfig, prefix: str = "") -> tuple[set[str], set[str]]:
    """(every dotted field name of ``cls``, the names of its free-form dict fields)."""
    import dataclasses
    import typing

    names: set[str] = set()
    free: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}{f.name}"
        names.add(dotted)
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            sub, sub_free = _field_tree(kind, dotted + ".")
            names |= sub
            free |= sub_free
        elif typing.get_origin(kind) is dict:
            free.add(dotted)
    return names, free


def check_field_name(name: str, source: str) -> None:
    """Raise :class:`ConfigError` naming ``source`` (a file or the command line) when ``name`` is not
    a field of :class:`RunConfig`, with the closest valid names."""
    import difflib

    from wsss.errors import ConfigError

    names, free = _field_tree()
    if name in names or any(name.startswith(f + ".") for f in free):
        return
    close = difflib.get_close_matches(name, sorted(names), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else "; `wsss <command> --help` lists every field"
    raise ConfigError(f"{source}: unknown field {name!r}{hint}")


def check_yaml_fields(data: Any, source: str, prefix: str = "") -> None:
    """:func:`check_field_name` on every key of a parsed YAML config (nested sections)."""
    if not isinstance(data, dict):
        return
    names, free = _field_tree()
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        check_field_name(dotted, source)
        if dotted in names and dotted not in free and isinstance(value, dict):
            check_yaml_fields(value, source, dotted + ".")
