"""Reading images safely and cutting them into the dynamic-resolution tiles CLIP sees.

Tiling follows InternVL: among the grids ``cols × rows`` with ``min_tiles ≤ cols·rows ≤ max_tiles``
pick the one whose aspect ratio is closest to the image's (on a tie, the larger grid when the image
has the pixels for it), resize to ``(cols·S, rows·S)``, cut ``S × S`` tiles row by row, and append a
whole-image thumbnail when there is more than one tile.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidImageError, describe

ImageLike = Image.Image | np.ndarray | torch.Tensor | str | Path | bytes


def load_image(image: ImageLike, max_pixels: int = 8192 * 8192) -> Image.Image:
    """Any supported image input → an RGB ``PIL.Image``.

    Accepts a ``PIL.Image`` (EXIF orientation applied); a path or raw encoded bytes; a uint8/float numpy array ``(H, W)``,
    ``(H, W, 3|4)``; a torch tensor ``(3, H, W)`` or ``(H, W, 3)`` with values in [0, 1] (float) or
    [0, 255] (uint8). Refuses empty, corrupt and larger-than-``max_pixels`` images with
    :class:`InvalidImageError`, before decoding pixels where the format allows.
    """
    if isinstance(image, (str, Path, bytes)):
        image = _open_encoded(image, max_pixels)
    elif isinstance(image, torch.Tensor):
        array = image.detach().cpu()
        if array.dtype in (torch.bfloat16, torch.float16):  # numpy has no bfloat16
            array = array.float()
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            array = array.permute(1, 2, 0)
        image = _from_array(array.numpy())
    elif isinstance(image, np.ndarray):
        image = _from_array(image)
    elif isinstance(image, Image.Image):
        image = ImageOps.exif_transpose(image)
    else:
        raise InvalidImageError(
            f"image: expected a PIL.Image, numpy array, torch tensor, path or bytes, got {describe(image)}"
        )
    width, height = image.size
    if width == 0 or height == 0:
        raise InvalidImageError(f"image: expected a non-empty image, got size {width}×{height}")
    if width * height > max_pixels:
        raise InvalidImageError(
            f"image: {width}×{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,}; "
            "downscale or tile it first (or raise VisionConfig.max_image_pixels if you trust the source)"
        )
    try:
        return image.convert("RGB")
    except OSError as error:  # truncated data surfaces only when pixels are decoded
        raise InvalidImageError(f"image: could not decode pixels ({error})") from error


def _open_encoded(source: str | Path | bytes, max_pixels: int) -> Image.Image:
    if isinstance(source, bytes):
        stream: Any = io.BytesIO(source)
        name = f"{len(source)} bytes"
    else:
        path = Path(source)
        if not path.is_file():
            raise InvalidImageError(f"image: expected an existing image file, got {str(path)!r}")
        stream, name = path, str(path)
    try:
        with Image.open(stream) as opened:
            # The header gives the size before any pixel is decoded: refuse bombs here.
            width, height = opened.size
            if width * height > max_pixels:
                raise InvalidImageError(
                    f"image {name}: {width}×{height} = {width * height:,} pixels exceeds the limit of "
                    f"{max_pixels:,}; downscale or tile it first"
                )
            opened.load()
            return ImageOps.exif_transpose(opened)  # upright, as a photo viewer shows it
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise InvalidImageError(f"image {name}: not a readable image ({error})") from error


def _from_array(array: np.ndarray) -> Image.Image:
    if array.size == 0:
        raise InvalidImageError(f"image: expected a non-empty array, got {describe(array)}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise InvalidImageError(f"image: expected an array of shape (H, W), (H, W, 3) or (H, W, 4), got {describe(array)}")
    if array.dtype == np.uint8:
        pixels = array
    elif np.issubdtype(array.dtype, np.floating) or array.dtype == np.bool_:
        values = array.astype(np.float32)
        if not np.isfinite(values).all():
            raise InvalidImageError("image: the array holds NaN or infinite values")
        pixels = (np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer):
        high = int(array.max()) if array.size else 0
        # 16-bit scans and similar: stretch the used range to 8 bits instead of clipping.
        scale = 255.0 / high if high > 255 else 1.0
        pixels = (array.astype(np.float64) * scale).clip(0, 255).astype(np.uint8)
    else:
        raise InvalidImageError(f"image: unsupported dtype {array.dtype}; expected uint8, integer or float")
    return Image.fromarray(np.ascontiguousarray(pixels))


def choose_grid(width: int, height: int, tile: int, min_tiles: int, max_tiles: int) -> tuple[int, int]:
    """The ``(cols, rows)`` grid whose aspect ratio is closest to the image's (InternVL rule)."""
    grids = sorted(
        {(c, r) for n in range(min_tiles, max_tiles + 1) for c in range(1, n + 1) for r in range(1, n + 1)
         if min_tiles <= c * r <= max_tiles},
        key=lambda g: g[0] * g[1],
    )
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in grids:
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * tile * tile * cols * rows:
            best = (cols, rows)  # same shape, more tiles: only worth it when the pixels are there
    return best


def tile_image(image: Image.Image, tile: int, min_tiles: int = 1, max_tiles: int = 4,
               use_thumbnail: bool = True) -> list[Image.Image]:
    """Cut ``image`` into ``cols·rows`` square tiles of side ``tile`` (+ a thumbnail when > 1 tile).

    The thumbnail, when present, is the **last** tile; with a single tile the tile is the thumbnail.
    """
    cols, rows = choose_grid(*image.size, tile, min_tiles, max_tiles)
    resized = image.resize((cols * tile, rows * tile), Image.BICUBIC)
    tiles = [resized.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile)) for r in range(rows) for c in range(cols)]
    if use_thumbnail and len(tiles) > 1:
        tiles.append(image.resize((tile, tile), Image.BICUBIC))
    return tiles


def normalize(tiles: list[Image.Image], mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """PIL tiles → float tensor ``(N, 3, S, S)`` normalised with ``mean``/``std``."""
    array = np.stack([np.asarray(t, dtype=np.float32) / 255.0 for t in tiles])  # (N, S, S, 3)
    pixels = torch.from_numpy(array).permute(0, 3, 1, 2)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (pixels - mean_t) / std_t
