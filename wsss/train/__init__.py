"""Lightning modules (classification, segmentation), their optimisers and metrics."""
