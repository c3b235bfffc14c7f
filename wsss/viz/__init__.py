"""Pictures: CAM overlays, mask panels, plots and the static HTML report."""
