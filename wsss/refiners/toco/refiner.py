"""ToCo refiner: token contrast (PTC + CTC) on a ViT classifier with a jointly trained segmentation
decoder (Ru et al., CVPR 2023; spec ``shared/specs/toco_usage_doei.md`` section A).

This module only orchestrates; the maths lives in ``losses`` (losses), ``labels`` (CAMs
and labels), ``crops`` (views), ``schedule`` (loss weights) and ``heads`` (modules) of this subpackage.

``faithful=True`` reproduces the official code (rulixiang/ToCo e13514d) including the quirks of
spec A.9; ``faithful=False`` (default) is the corrected behaviour:

==========  =====================================  ==========================================
quirk       faithful=True                          faithful=False (default)
==========  =====================================  ==========================================
Q1-Q4       CTC extra term, k == g positives,      no extra term, k == g skipped, mean over
            normaliser #pos + 1e-4, dot products   positive pairs, cosine similarity
Q5          COCO temperature 1.0                   COCO temperature 0.5 (the intended value)
Q6-Q8       PTC |cos|, "+1" smoothing, batch-      1 - cos / max(cos, 0), per-image means
            pooled counts
Q9          input-pixel box on the token grid      box mapped to token units
Q10         schedule boundaries one step late      boundaries at the configured step
Q11         local-crop flag counts fg twice        fraction of non-background pixels
Q12         local-crop source flipped on its own   same geometry as the ROI map
Q13/Q14     EMA at the start of ``losses``         EMA in ``on_after_optimizer_step``
==========  =====================================  ==========================================

Teacher class tokens (Q13): both modes take the teacher's encoder output from the student's
forward of the same views, detached; the encoder is shared and has no dropout, so the values equal
the official second encoder pass without its cost.

Documented deviations from the official code (both modes):

* Views: the hook ``views`` is not used. The local crops need the auxiliary CAM of the current
  weights, which only exists after the forward, so both extra views are built in ``losses`` from
  a generator seeded with ``(seed, step, rank)``, which makes them reproducible on resume. The
  second global view is a RandomResizedCrop (scale 0.4-1) + flip + colour jitter of the
  augmented main input (the official one crops the original image), and the local-crop source is
  a colour-jittered copy of the main input. Photometric jitter is brightness/contrast/saturation
  (p 0.8) and grayscale (p 0.2); hue jitter, blur and solarisation are left out.
* Segmentation pseudo-labels: PAR (``par=True``, default) runs on the normalised input rather
  than the de-normalised one; PAR's affinities only use per-channel colour ratios, which a
  per-channel affine normalisation leaves unchanged (up to its 1e-8 guard). ``par=False`` skips
  PAR, which reduces the rule to :func:`cam_to_label` with the same ``high`` / ``low``.
* The dense-CRF regularisation loss (``reg``, rloss CUDA extension, weight 0.05) is not
  implemented.
* An empty background or foreground part of the segmentation loss contributes 0 (official: NaN).

Batch keys read: ``image`` [B, 3, H, W], ``label`` [B, C-1] and optionally ``valid_box`` [B, 4]
(top, bottom, left, right) in input pixels marking the non-padded region (all valid if absent).
Outputs read: ``model`` (the Classifier, with ``forward_outputs``, ``head.cam``, ``aux_head.cam``
and ``backbone``), ``features`` [B, D, h, w] (final tokens after the final norm) and
``backbone.prefix_tokens`` [B, P, D] (class token first).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wsss.errors import ConfigError
from wsss.refiners.base import Losses, Refiner
from wsss.refiners.toco.crops import colour_jitter, random_resized_crop, sample_local_crops
from wsss.refiners.toco.heads import LargeFOV, ProjectionHead, ema_update
from wsss.refiners.toco.labels import multi_scale_cam, refine_labels_with_background, roi_map, token_labels
from wsss.refiners.toco.losses import balanced_seg_loss, ctc_loss, ptc_loss
from wsss.refiners.toco.schedule import ToCoWeights, default_starts, loss_weights

THRESHOLDS = {"voc": (0.70, 0.25, 0.50), "coco": (0.65, 0.25, 0.45)}


class ToCoRefiner(Refiner):
    """ToCo: patch token contrast, class token contrast and a LargeFOV decoder trained on CAM
    pseudo-labels, all added to the classification loss.

    Args:
        dataset: "voc" or "coco": picks the default thresholds, temperature and schedule.
        faithful: reproduce the official code's quirks (see the module docstring); default False
            is the corrected behaviour.
        proj_hidden_dim, proj_bottleneck_dim, proj_dim: CTC head sizes (2048, 256, 1024).
        temperature: CTC tau; None = 0.5, or 1.0 for COCO when faithful (Q5).
        momentum: EMA momentum of the teacher head (fixed).
        n_local, local_size: local crops per image and their side in pixels.
        negative_ratio: local-crop flag threshold (0.2).
        high, low, bkg_thre: CAM thresholds; None = dataset values (VOC 0.70/0.25/0.50, COCO
            0.65/0.25/0.45). ``bkg_thre`` has no effect on training labels (the ignore band is
            used); it is kept as the seed threshold for CAM evaluation.
        ptc_weight, ctc_weight, seg_weight: loss weights once their phase is on.
        seg_warmup: first step of the segmentation loss; None = 2000 (VOC) / 8000 (COCO).
        contrast_start: first step of PTC/CTC (before it, COCO seg labels come from the aux CAM);
            None = dataset default (VOC always on, COCO 12000); -1 = always on.
        decoder: only "largefov".
        decoder_channels, decoder_dilation: LargeFOV width (512) and dilation (5).
        cam_scales: scales of the training multi-scale CAM.
        par: refine the segmentation pseudo-labels with PAR (official: yes).
        par_down_scale: PAR works at ``1 / par_down_scale`` of the input size (2).
        seed: seed of the view generator.

    ``refine_cam`` is the base no-op (CAMs pass unchanged); :meth:`segment` gives the decoder's
    logits for segmentation inference.
    """

    name = "toco"
    families = ("vit",)

    @classmethod
    def demo_entries(cls) -> dict[str, dict[str, Any]]:
        """ToCo on the demo ViT: VOC thresholds and weights, the schedule and crops scaled to the
        600-step, 128 px budget (``configs/demo/toco_vit.yaml``)."""
        return {"toco_vit": {"family": "vit", "overrides": {"classifier": {"refiners": [{
            "name": "toco", "dataset": "voc", "seg_warmup": 300, "local_size": 48, "n_local": 4,
            "proj_hidden_dim": 512, "proj_bottleneck_dim": 128, "proj_dim": 256}]}}}}

    def __init__(
        self,
        dataset: str = "voc",
        faithful: bool = False,
        proj_hidden_dim: int = 2048,
        proj_bottleneck_dim: int = 256,
        proj_dim: int = 1024,
        temperature: float | None = None,
        momentum: float = 0.9,
        n_local: int = 8,
        local_size: int = 96,
        negative_ratio: float = 0.2,
        high: float | None = None,
        low: float | None = None,
        bkg_thre: float | None = None,
        ptc_weight: float = 0.2,
        ctc_weight: float = 0.5,
        seg_weight: float = 0.1,
        seg_warmup: int | None = None,
        contrast_start: int | None = None,
        decoder: str = "largefov",
        decoder_channels: int = 512,
        decoder_dilation: int = 5,
        cam_scales: tuple[float, ...] = (1.0, 0.5, 1.5),
        par: bool = True,
        par_down_scale: int = 2,
        seed: int = 0,
    ):
        super().__init__()
        default_seg, default_contrast = default_starts(dataset)
        if decoder != "largefov":
            raise ConfigError(f"toco: decoder must be 'largefov'; got {decoder!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"toco: momentum must be in [0, 1]; got {momentum}")
        d_high, d_low, d_bkg = THRESHOLDS[dataset]
        self.dataset = dataset
        self.faithful = faithful
        self.proj_sizes = (proj_hidden_dim, proj_bottleneck_dim, proj_dim)
        if temperature is None:
            temperature = 1.0 if (dataset == "coco" and faithful) else 0.5
        self.temperature = temperature
        self.momentum = momentum
        self.n_local = n_local
        self.local_size = local_size
        self.negative_ratio = negative_ratio
        self.high = d_high if high is None else high
        self.low = d_low if low is None else low
        self.bkg_thre = d_bkg if bkg_thre is None else bkg_thre
        self.ptc_weight, self.ctc_weight, self.seg_weight = ptc_weight, ctc_weight, seg_weight
        self.seg_start = default_seg if seg_warmup is None else seg_warmup
        if contrast_start is None:
            contrast_start = default_contrast
        self.contrast_start = None if contrast_start is not None and contrast_start < 0 else contrast_start
        self.decoder_channels = decoder_channels
        self.decoder_dilation = decoder_dilation
        self.cam_scales = tuple(cam_scales)
        self.par = par
        self.par_down_scale = par_down_scale
        self.seed = seed
        late = 1 if faithful else 0
        stages = [("contrast" if self.contrast_start is None else "classification", 0)]
        if self.contrast_start is not None and self.contrast_start > self.seg_start:
            stages.append(("segmentation_aux_labels", self.seg_start + late))
            stages.append(("full", self.contrast_start + late))
        else:
            stages.append(("full", self.seg_start + late))
        self.stages = stages
        self.proj_head: ProjectionHead | None = None
        self.teacher_head: ProjectionHead | None = None
        self.decoder: LargeFOV | None = None

    def attach(self, model: nn.Module) -> None:
        """Add the student projection head, its EMA teacher (no gradient) and the decoder, sized
        from ``model.backbone`` (must be a ViT) and the classifier's number of classes.

        ``model`` is a :class:`wsss.models.classifier.Classifier` with an auxiliary head: the
        training CAMs use ``model.head.cam`` on the final map and ``model.aux_head.cam`` on the
        auxiliary map of ``forward_outputs``."""
        backbone = getattr(model, "backbone", None)
        if backbone is None or not getattr(backbone, "is_vit", False):
            raise ConfigError("toco: the refiner needs a ViT backbone (class token and patch tokens); "
                              "set model.backbone to a vit_* / deit_* model")
        if getattr(model, "aux_head", None) is None:
            raise ConfigError("toco: the refiner needs the auxiliary classifier; set classifier.aux_layer "
                              "(ToCo uses -3)")
        dim = backbone.final_channels
        hidden, bottleneck, out = self.proj_sizes
        self.proj_head = ProjectionHead(dim, hidden, bottleneck, out)
        self.teacher_head = copy.deepcopy(self.proj_head).requires_grad_(False)
        num_classes = model.head.classifier.out_channels + 1
        self.decoder = LargeFOV(dim, num_classes, self.decoder_channels, self.decoder_dilation)

    def weights_at(self, step: int) -> ToCoWeights:
        """Loss weights and segmentation-label source at ``step`` (0-based)."""
        return loss_weights(
            step, self.seg_start, self.contrast_start, self.ptc_weight, self.ctc_weight,
            self.seg_weight, faithful=self.faithful,
        )

    def losses(self, batch: dict[str, Any], outputs: dict[str, Any], step: int) -> Losses:
        if self.proj_head is None or self.teacher_head is None or self.decoder is None:
            raise ConfigError("toco: losses() called before attach(model)")
        if self.faithful:
            ema_update(self.teacher_head, self.proj_head, self.momentum)
        weights = self.weights_at(step)
        if weights.ptc == 0 and weights.ctc == 0 and weights.seg == 0:
            return {}
        model = outputs["model"]
        images, cls_label = batch["image"], batch["label"]
        box = batch.get("valid_box")
        cam, aux_cam = multi_scale_cam(lambda x: _class_maps(model, x), images, self.cam_scales)
        features = outputs["features"]
        terms: Losses = {}
        if weights.ptc > 0:
            labels = token_labels(aux_cam, cls_label, tuple(features.shape[-2:]), self.high, self.low,
                                  box, faithful=self.faithful)
            terms["toco_ptc"] = (weights.ptc, ptc_loss(features.flatten(2).transpose(1, 2), labels,
                                                       faithful=self.faithful))
        if weights.ctc > 0:
            terms["toco_ctc"] = (weights.ctc, self._ctc_loss(model, images, cls_label, aux_cam, outputs, step))
        if weights.seg > 0:
            seg_cam = cam if weights.seg_cam == "final" else aux_cam
            seg_labels = refine_labels_with_background(
                images, seg_cam, cls_label, self.high, self.low, valid_box=box,
                down_scale=self.par_down_scale, par=self.par, faithful=self.faithful,
            )
            logits = F.interpolate(self.decoder(features), size=images.shape[-2:], mode="bilinear",
                                   align_corners=False)
            terms["toco_seg"] = (weights.seg, balanced_seg_loss(logits, seg_labels))
        return terms

    def on_after_optimizer_step(self, model: nn.Module, step: int) -> None:
        if not self.faithful and self.proj_head is not None and self.teacher_head is not None:
            ema_update(self.teacher_head, self.proj_head, self.momentum)

    def segment(self, features: torch.Tensor) -> torch.Tensor:
        """Decoder logits [B, C, h, w] (background first) from final token maps [B, D, h, w]."""
        if self.decoder is None:
            raise ConfigError("toco: segment() called before attach(model)")
        return self.decoder(features)

    def _generator(self, step: int) -> torch.Generator:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank = torch.distributed.get_rank() if distributed else 0
        return torch.Generator().manual_seed((self.seed * 1_000_003 + step) * 1_009 + rank)

    def _ctc_loss(
        self,
        model: nn.Module,
        images: torch.Tensor,
        cls_label: torch.Tensor,
        aux_cam: torch.Tensor,
        outputs: dict[str, Any],
        step: int,
    ) -> torch.Tensor:
        """Class token contrast of the main input, a second global view and the local crops."""
        gen = self._generator(step)
        mean, std = model.backbone.mean, model.backbone.std
        global_view = colour_jitter(random_resized_crop(images, gen), mean, std, gen)
        source = colour_jitter(images, mean, std, gen)
        if self.faithful:
            flip = (torch.rand(images.shape[0], generator=gen) < 0.5).to(images.device)[:, None, None, None]
            source = torch.where(flip, source.flip(-1), source)
        roi = roi_map(aux_cam, cls_label, self.high, self.low)
        crops, flags = sample_local_crops(source, roi, self.n_local, self.local_size, gen,
                                          negative_ratio=self.negative_ratio, faithful=self.faithful)
        b = images.shape[0]
        main_token = _class_token(outputs["backbone"].prefix_tokens)
        global_token = _class_token(model.backbone(global_view).prefix_tokens)
        local_tokens = _class_token(model.backbone(crops.flatten(0, 1)).prefix_tokens).view(b, self.n_local, -1)
        tokens = torch.cat([main_token[:, None], global_token[:, None], local_tokens], dim=1)
        student = self.proj_head(tokens)
        with torch.no_grad():
            teacher = self.teacher_head(tokens[:, :2].detach())
        all_flags = torch.cat([flags.new_ones(b, 2), flags], dim=1)
        return ctc_loss(teacher, student, all_flags, self.temperature, faithful=self.faithful)


def _class_token(prefix_tokens: torch.Tensor | None) -> torch.Tensor:
    if prefix_tokens is None or prefix_tokens.shape[1] == 0:
        raise ConfigError("toco: the backbone returned no class token; use a ViT with a class token")
    return prefix_tokens[:, 0]


def _class_maps(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw final and auxiliary class maps [N, C-1, h, w] of the classifier ``model`` for ``images``."""
    out = model.forward_outputs(images)
    return model.head.cam(out["features"]), model.aux_head.cam(out["aux_features"])
