"""CAM heat-map overlays and labelled image panels."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageDraw

from wsss.data.palette import colorize


def heatmap(cam: np.ndarray) -> np.ndarray:
    """CAM float [H, W] in [0, 1] -> RGB uint8 [H, W, 3] (jet colour map)."""
    scaled = np.clip(np.nan_to_num(cam) * 255.0, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(scaled, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def overlay_cam(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the heat map of ``cam`` [H, W] over ``image`` uint8 [H, W, 3]."""
    if cam.shape != image.shape[:2]:
        cam = cv2.resize(cam.astype(np.float32), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * heatmap(cam).astype(np.float32)
    return np.clip(blended, 0, 255).astype(np.uint8)


def mask_rgb(mask: np.ndarray) -> np.ndarray:
    """Index mask uint8 [H, W] -> VOC-palette RGB (ignore drawn white)."""
    return colorize(mask)


def panel(tiles: list[np.ndarray], titles: list[str], tile_size: int = 160) -> np.ndarray:
    """Tiles side by side, each resized to ``tile_size`` high, with its title above it."""
    header = 16
    resized = []
    for tile in tiles:
        h, w = tile.shape[:2]
        new_w = max(1, round(w * tile_size / h))
        resized.append(cv2.resize(tile, (new_w, tile_size), interpolation=cv2.INTER_NEAREST))
    width = sum(t.shape[1] for t in resized) + 4 * (len(resized) - 1)
    canvas = Image.new("RGB", (width, tile_size + header), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for tile, title in zip(resized, titles):
        canvas.paste(Image.fromarray(tile), (x, header))
        draw.text((x + 2, 2), title, fill=(0, 0, 0))
        x += tile.shape[1] + 4
    return np.asarray(canvas)
