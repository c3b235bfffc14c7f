"""wsss: weakly supervised semantic segmentation, from image-level labels to a trained segmenter."""

__version__ = "0.1.0"
