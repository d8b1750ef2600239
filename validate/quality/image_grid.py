"""Sample grids as small PNG files (Pillow: installs from PyPI, works offline, no browser).

Pure functions from tensors to a :class:`PIL.Image.Image`; writing is the caller's, atomically.
Shape legend: B images, C = 1 channel, S pixels per side.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

_GAP_PX = 2
_LABEL_W_PX = 150
_BACKGROUND = 255


def tile(images_BCSS: torch.Tensor, *, cols: int, scale: int = 3) -> Image.Image:
    """Grey images in [-1, 1] as one tile of ``cols`` columns (black ink on white), each pixel
    drawn ``scale`` x ``scale`` without smoothing so the 8x8 pixels stay visible."""
    x = ((1.0 - images_BCSS.float().clamp(-1, 1)) * 127.5).round().to(torch.uint8)[:, 0].numpy()
    B, S = x.shape[0], x.shape[-1]
    rows = -(-B // cols)
    cell = S * scale + _GAP_PX
    canvas = np.full((rows * cell + _GAP_PX, cols * cell + _GAP_PX), _BACKGROUND, dtype=np.uint8)
    for i in range(B):
        r, c = divmod(i, cols)
        big = np.kron(x[i], np.ones((scale, scale), dtype=np.uint8))
        canvas[_GAP_PX + r * cell : _GAP_PX + r * cell + S * scale, _GAP_PX + c * cell : _GAP_PX + c * cell + S * scale] = big
    return Image.fromarray(canvas, mode="L")


def labelled_blocks(blocks: Sequence[tuple[str, torch.Tensor]], *, cols: int, scale: int = 3) -> Image.Image:
    """One tile per (label, images), stacked vertically with the label on the left."""
    tiles = [(label, tile(images, cols=cols, scale=scale)) for label, images in blocks]
    width = _LABEL_W_PX + max(t.width for _, t in tiles)
    height = sum(t.height for _, t in tiles) + _GAP_PX * len(tiles)
    out = Image.new("L", (width, height), _BACKGROUND)
    draw, font = ImageDraw.Draw(out), ImageFont.load_default()
    y = 0
    for label, t in tiles:
        out.paste(t, (_LABEL_W_PX, y))
        draw.text((4, y + t.height // 2 - 6), label, fill=0, font=font)
        y += t.height + _GAP_PX
    return out
