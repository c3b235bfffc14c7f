"""What the classifier and the segmenter share: a backbone, its normalisation and checkpoint loading."""

from __future__ import annotations

from pathlib import Path

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
