"""The explanation grid of one image: a CAM overlay per (method, class), methods as rows, classes as
columns headed by the class name and score."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from wsss.viz.overlay import overlay_cam

GAP = 4
LINE = 20
FONT_SIZE = 13


@dataclass(frozen=True)
class GridLayout:
    """Where everything goes: ``boxes[r][c]`` is the (x, y, width, height) of panel (row r, column c)."""

    width: int
    height: int
    label_width: int
    header: int
    boxes: list[list[tuple[int, int, int, int]]]


def grid_layout(rows: int, cols: int, tile_h: int, tile_w: int, label_width: int, titled: bool) -> GridLayout:
    """Row labels on the left, an optional title line and a line of column titles on top."""
    header = LINE * (2 if titled else 1)
    boxes = [[(label_width + c * (tile_w + GAP), header + r * (tile_h + GAP), tile_w, tile_h) for c in range(cols)]
             for r in range(rows)]
    return GridLayout(label_width + cols * (tile_w + GAP), header + rows * (tile_h + GAP), label_width, header, boxes)


def tile_size(height: int, width: int, max_height: int = 224, min_height: int = 128) -> tuple[int, int]:
    """(h, w) of a panel: the image's size, scaled to within [min_height, max_height] (small images are
    enlarged so that the class titles fit above them)."""
    target = min(max(height, min_height), max_height)
    if target == height:
        return height, width
    return target, max(1, round(width * target / height))


def resize_tile(tile: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A panel at ``size`` (h, w): area-averaged when smaller, nearest pixels when larger."""
    if tile.shape[:2] == tuple(size):
        return tile
    smaller = size[0] < tile.shape[0]
    return cv2.resize(tile, (size[1], size[0]), interpolation=cv2.INTER_AREA if smaller else cv2.INTER_NEAREST)


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default(size=FONT_SIZE)


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text``, cut with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def explain_grid(image: np.ndarray, cams: dict[str, np.ndarray], column_titles: list[str], title: str = "",
                 max_tile_height: int = 224, min_tile_height: int = 128) -> np.ndarray:
    """RGB uint8 grid of ``image`` uint8 [H, W, 3] and ``cams`` {method: float [K, H, W] in [0, 1]}:
    row ``r`` is the r-th method, column ``k`` class slot ``k`` (``column_titles[k]``)."""
    methods = list(cams)
    cols = len(column_titles)
    th, tw = tile_size(image.shape[0], image.shape[1], max_tile_height, min_tile_height)
    font = _font()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = int(max([measure.textlength(m, font=font) for m in methods] + [40])) + 10
    layout = grid_layout(len(methods), cols, th, tw, label_width, bool(title))
    canvas = Image.new("RGB", (layout.width, layout.height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 3), _fit(draw, title, font, layout.width - 8), fill=(0, 0, 0), font=font)
    for c, text in enumerate(column_titles):
        x = label_width + c * (tw + GAP)
        draw.text((x + 2, layout.header - LINE + 3), _fit(draw, text, font, tw - 4), fill=(0, 0, 0), font=font)
    for r, method in enumerate(methods):
        y = layout.header + r * (th + GAP)
        draw.text((4, y + th // 2 - FONT_SIZE // 2), method, fill=(0, 0, 0), font=font)
        for c in range(cols):
            tile = resize_tile(overlay_cam(image, cams[method][c]), (th, tw))
            canvas.paste(Image.fromarray(tile), layout.boxes[r][c][:2])
    return np.asarray(canvas)
