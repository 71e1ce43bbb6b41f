"""Tiled inference: run a fully convolutional x``scale`` network on an image of any size.

Why tiles: an RRDBNet forward at 512x512 LR holds gigabytes of activations (64 features
at 4x resolution). Splitting the input bounds memory by the tile size. Seams are avoided
the usual way (BasicSR/Real-ESRGAN's ``tile_pad``): each tile is run with ``overlap``
extra LR pixels of real context on every side and only its centre is kept, so where
``overlap`` covers the network's receptive radius the result equals the untiled output.

Unlike the usual scheme, tiles at the border are not shrunk: the context window is slid
inward to stay inside the image, which keeps every window the same size. Equal sizes let
tiles be batched and let an XLA-compiled forward compile once instead of per tile shape.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from doe_sr.core.errors import UserError


def _windows(length: int, tile: int, overlap: int) -> tuple[int, list[tuple[int, int, int]]]:
    """Window size and (core start, core end, window start) along one axis.

    The core [c0, c1) is kept from the window [w0, w0 + size); it is at least ``overlap``
    away from any window edge that is not also an image edge.
    """
    size = min(tile + 2 * overlap, length)
    spans = []
    for c0 in range(0, length, tile):
        c1 = min(c0 + tile, length)
        w0 = min(max(c0 - overlap, 0), length - size)
        spans.append((c0, c1, w0))
    return size, spans


def upscale_tiled(
    fn: Callable[[np.ndarray], np.ndarray],
    lr: np.ndarray,
    *,
    scale: int,
    tile: int = 128,
    overlap: int = 16,
    batch: int = 4,
) -> np.ndarray:
    """Apply ``fn`` (N x h x w x 3 -> N x sh x sw x 3) to ``lr`` (H x W x 3) tile by tile.

    Images no larger than ``tile`` in both axes go through ``fn`` whole. Otherwise tiles
    of ``tile`` LR pixels (plus ``overlap`` context) are run ``batch`` at a time; a short
    last batch is padded by repeating its last tile so ``fn`` always sees one batch shape.
    """
    if lr.ndim != 3:
        raise UserError(f"expected an HxWxC image, got shape {lr.shape}")
    if tile < 1 or overlap < 0 or batch < 1 or scale < 1:
        raise UserError(f"tile ({tile}), batch ({batch}) and scale ({scale}) must be >= 1 "
                        f"and overlap ({overlap}) >= 0")
    h, w, c = lr.shape
    if h <= tile and w <= tile:
        return np.asarray(fn(lr[None]))[0]
    size_y, spans_y = _windows(h, tile, overlap)
    size_x, spans_x = _windows(w, tile, overlap)
    jobs = [(sy, sx) for sy in spans_y for sx in spans_x]
    out: np.ndarray | None = None
    for start in range(0, len(jobs), batch):
        chunk = jobs[start:start + batch]
        stack = np.stack([lr[y[2]:y[2] + size_y, x[2]:x[2] + size_x] for y, x in chunk])
        if len(chunk) < batch and start > 0:
            stack = np.concatenate([stack, np.repeat(stack[-1:], batch - len(chunk), axis=0)])
        pred = np.asarray(fn(stack))
        if out is None:
            out = np.empty((h * scale, w * scale, pred.shape[-1]), dtype=pred.dtype)
        for (y, x), tile_out in zip(chunk, pred):
            (cy0, cy1, wy0), (cx0, cx1, wx0) = y, x
            out[cy0 * scale:cy1 * scale, cx0 * scale:cx1 * scale] = tile_out[
                (cy0 - wy0) * scale:(cy1 - wy0) * scale, (cx0 - wx0) * scale:(cx1 - wx0) * scale
            ]
    assert out is not None
    return out
