"""The LVC training loop (ExCEL spec C.6-C.8) as a Lightning module: online pseudo labels from the
frozen CLIP (static CAMs before ``shift_start``, dynamic CAMs after), the adapter and decoder trained on
them with ``L_seg + aff_weight * L_aff``. No CLIP parameter is in the optimiser."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from wsss.affinity.par import par_refine
from wsss.cams.core import WSSS_EPS, minmax
from wsss.refiners.excel.affinity import affinity_refine, mean_patch_attention, transition_matrix
from wsss.refiners.excel.clip_model import DenseOutput, dense_forward
from wsss.refiners.excel.lvc import (
    LvcAdapter,
    LvcDecoder,
    affinity_loss,
    affinity_target,
    dynamic_shift,
    lvc_affinity,
    predicted_affinity,
)
from wsss.refiners.excel.methods import ClipCamModel
from wsss.refiners.excel.surgery import surgery_cam
from wsss.refiners.toco.losses import balanced_seg_loss
from wsss.train.optim import per_step_scheduler


def online_labels(model: ClipCamModel, tokens: torch.Tensor, grid: tuple[int, int], labels: torch.Tensor,
                  images: torch.Tensor, transitions: torch.Tensor) -> torch.Tensor:
    """Pseudo labels [B, H, W] (0 background, c + 1 class c) of projected tokens [B, 1+hw, E]: patch-text
    CAMs of the present classes (``labels`` [B, K] multi-hot), box-masked affinity refinement with
    ``transitions`` [B, hw, hw], min-max, background ``1 - max``, PAR on ``images``, argmax."""
    o = model.options
    h, w = grid
    cams = surgery_cam(F.normalize(tokens, dim=1 if o["feature_norm"] == "token" else -1), model.enriched_text,
                       model.num_classes, use_prior=o["class_prior"]).transpose(1, 2).reshape(-1, model.num_classes, h, w)
    cams = cams * (labels > 0)[..., None, None].to(cams.dtype)
    cams = torch.stack([affinity_refine(c, t, o["box_threshold"]) for c, t in zip(cams, transitions)])
    cams = minmax(F.interpolate(cams, size=images.shape[-2:], mode="bilinear", align_corners=False), WSSS_EPS)
    cams = cams * (labels > 0)[..., None, None].to(cams.dtype)
    scores = torch.cat([1 - cams.amax(dim=1, keepdim=True), cams], dim=1)
    if o["par_iter"] > 0:
        scores = par_refine(images, scores, num_iter=o["par_iter"], normalise=True)
    return scores.argmax(dim=1)


class LvcModule(pl.LightningModule):
    """ExCEL's Learnable Visual Calibration.

    Args:
        clip_model: the frozen :class:`ClipCamModel` (its ``options`` give SVC, CAM and refinement).
        shift_start: first step of the dynamic shift and dynamic CAMs (ExCEL: 14000 VOC, 30000 COCO).
        self_label_start: first step the affinity target comes from the decoder's argmax instead of the
            pseudo label (ExCEL VOC 24000; None = never, COCO).
        aff_weight: weight of ``L_aff`` (0.1).
        radius: pair radius of ``L_aff`` on the token grid (8).
        dim: adapter and decoder width (256).
        decoder_depth: decoder layers (3).
        decoder_heads: decoder heads (8).
        dropout: Dropout2d of the adapter (0.1).
        lr: AdamW learning rate (1e-4).
        weight_decay: AdamW weight decay (1e-2).
        warmup_steps: linear warm-up steps (50 VOC, 200 COCO).
        warmup_ratio: warm-up start factor (ExCEL: lr 1e-6 of 1e-4, i.e. 0.01).
        max_steps: training iterations (30000 VOC, 100000 COCO).
        power: poly decay power (1.0).
    """

    def __init__(self, clip_model: ClipCamModel, shift_start: int = 14000, self_label_start: int | None = 24000,
                 aff_weight: float = 0.1, radius: int = 8, dim: int = 256, decoder_depth: int = 3,
                 decoder_heads: int = 8, dropout: float = 0.1, lr: float = 1e-4, weight_decay: float = 1e-2,
                 warmup_steps: int = 50, warmup_ratio: float = 0.01, max_steps: int = 30000, power: float = 1.0):
        super().__init__()
        self.save_hyperparameters(ignore=["clip_model"])
        # Checkpoints hold only the trained parts; the frozen CLIP is rebuilt from its weight file.
        self.strict_loading = False
        self.clip_model = clip_model
        visual = clip_model.visual
        self.adapter = LvcAdapter(visual.conv1.out_channels, len(visual.transformer.resblocks), dim, dropout)
        self.decoder = LvcDecoder(clip_model.num_classes, dim, decoder_depth, decoder_heads)

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip_model.eval()
        return self

    def on_save_checkpoint(self, checkpoint) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if not k.startswith("clip_model.")}

    def shift_on(self, step: int) -> bool:
        return step >= self.hparams.shift_start

    def static_forward(self, x: torch.Tensor) -> DenseOutput:
        o = self.clip_model.options
        with torch.no_grad():
            return dense_forward(self.clip_model.visual, x, svc_layers=o["svc_layers"],
                                 head_sum_in_calibrated=o["head_sum_in_calibrated"])

    def cam_tokens(self, x: torch.Tensor, static: DenseOutput, z: torch.Tensor, step: int) -> torch.Tensor:
        """The tokens the CAMs read: static before ``shift_start``, with the dynamic shift after."""
        if not self.shift_on(step):
            return static.tokens
        o = self.clip_model.options
        with torch.no_grad():
            return dense_forward(self.clip_model.visual, x, svc_layers=o["svc_layers"],
                                 head_sum_in_calibrated=o["head_sum_in_calibrated"], shift=dynamic_shift(z)).tokens

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Segmentation logits [B, K+1, H, W] of CLIP-normalised images [B, 3, H, W]."""
        x = self.clip_model.patch_input(images)
        static = self.static_forward(x)
        logits = self.decoder(self.adapter(static.layers, static.grid))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def training_step(self, batch, batch_idx):
        images, labels = batch["image"], batch["label"]
        step = self.global_step
        x = self.clip_model.patch_input(images)
        static = self.static_forward(x)
        z = self.adapter(static.layers, static.grid)
        logits = F.interpolate(self.decoder(z), size=images.shape[-2:], mode="bilinear", align_corners=False)
        aseg = predicted_affinity(z)
        with torch.no_grad():
            tokens = self.cam_tokens(x, static, z, step)
            if self.shift_on(step):
                transitions = lvc_affinity(aseg.detach(), static.attentions)
            else:
                transitions = transition_matrix(mean_patch_attention(static.attentions,
                                                                     self.clip_model.options["affinity_layers"]))
            pseudo = online_labels(self.clip_model, tokens, static.grid, labels, images, transitions)
        start = self.hparams.self_label_start
        aff_labels = logits.detach().argmax(dim=1) if start is not None and step >= start else pseudo
        seg = balanced_seg_loss(logits, pseudo)
        aff = affinity_loss(aseg, affinity_target(aff_labels, static.grid, self.hparams.radius))
        loss = seg + self.hparams.aff_weight * aff
        self.log_dict({"train/seg": seg, "train/aff": aff, "train/loss": loss,
                       "train/shift_on": float(self.shift_on(step))}, batch_size=images.shape[0])
        return loss

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [*self.adapter.parameters(), *self.decoder.parameters()]

    def configure_optimizers(self):
        h = self.hparams
        optimizer = torch.optim.AdamW(self.trainable_parameters(), lr=h.lr, weight_decay=h.weight_decay)
        return {"optimizer": optimizer,
                "lr_scheduler": per_step_scheduler(optimizer, h.max_steps, h.warmup_steps, h.warmup_ratio, h.power)}
