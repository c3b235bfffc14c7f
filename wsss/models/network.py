"""What the classifier and the segmenter share: a backbone, its normalisation and checkpoint loading."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from wsss.models.weights import read_module_checkpoint


class BackboneNetwork(nn.Module):
    """A network built around ``self.backbone`` whose constructor arguments are kept in ``self.config``.

    ``checkpoint_kind`` names the network in the error for a checkpoint of the wrong kind.
    """

    checkpoint_kind = "network"
    backbone: nn.Module
    config: dict

    @property
    def mean(self) -> tuple[float, float, float]:
        return tuple(self.backbone.mean)

    @property
    def std(self) -> tuple[float, float, float]:
        return tuple(self.backbone.std)

    def backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.parameters())

    @classmethod
    def from_checkpoint(cls, path: str | Path):
        """Rebuild from a wsss Lightning checkpoint (``weights_only`` load; no pretrained file needed)."""
        config, state = read_module_checkpoint(path, cls.checkpoint_kind)
        model = cls(**config)
        model.load_state_dict(state)
        return model


def set_memory_format(model: nn.Module, channels_last: bool) -> nn.Module:
    """``model`` (changed in place and returned) with its 4-D weights in NHWC order when
    ``channels_last``, else NCHW. A convolution whose weight is NHWC gives an NHWC output, so the whole
    network runs in that order without converting its input; parameters keep their identity, so an
    optimiser built before the change still steps them."""
    return model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
