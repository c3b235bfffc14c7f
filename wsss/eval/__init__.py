"""Evaluation: confusion-matrix mIoU, CAM threshold sweeps, CAM faithfulness metrics."""
