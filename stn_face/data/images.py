"""Robust image reading: any photo a user drops in a folder becomes 8-bit RGB, or a clear error.

Decoding goes through Pillow, which (unlike ``cv2.imread``) reports truncated files instead of
returning half-grey images, and knows CMYK JPEGs, palettes, 16-bit PNGs and EXIF orientation.
Conversions, all to ``uint8`` RGB ``(H, W, 3)``:

- grayscale, 1-bit, palette, CMYK, YCbCr, LAB, ...: Pillow's colour conversion;
- 16-bit and 32-bit integer or float grayscale: scaled from 0..65535 to 0..255 (float: clipped 0..255);
- transparency (RGBA, LA, palette with a transparent index): composited onto black, so hidden
  colours under transparent pixels never leak into the image;
- EXIF orientation tags are applied, so the face is upright as a viewer shows it;
- images with more than ``max_pixels`` pixels are downscaled to fit (JPEGs decode directly at a reduced
  scale), or refused with ``downscale=False``.
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from stn_face.errors import InputError

#: The pixel normalisation of every network input, said once: RGB ``[0, 255]`` -> ``(v / 255 - MEAN) / STD``,
#: i.e. ``[-1, 1]`` (the augmentation pipelines, the embedder and the exported models' metadata use these).
MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
STD: tuple[float, float, float] = (0.5, 0.5, 0.5)

DEFAULT_MAX_PIXELS = 40_000_000


class ImageReadError(InputError):
    """An image file could not be turned into an RGB array; ``reason`` says why in a few words."""

    def __init__(self, reason: str, path: str | os.PathLike | None = None) -> None:
        self.reason = reason
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


def _scale_to_uint8(image: Image.Image) -> np.ndarray:
    """Grayscale of more than 8 bits (modes I;16*, I, F) to a uint8 (H, W) array."""
    values = np.asarray(image)
    if image.mode == "F":
        return np.clip(np.nan_to_num(values), 0, 255).round().astype(np.uint8)
    return np.clip(values.astype(np.float64) / 257.0, 0, 255).round().astype(np.uint8)


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        return np.repeat(_scale_to_uint8(image)[:, :, None], 3, axis=2)
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode == "RGBA":
        rgba = np.asarray(image).astype(np.float32)
        rgb = rgba[:, :, :3] * (rgba[:, :, 3:4] / 255.0)
        return rgb.round().astype(np.uint8)
    if mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block does not make the pixels unusable."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - any EXIF parsing problem
        return image


def read_rgb(path: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
             downscale: bool = True) -> np.ndarray:
    """Read an image file as a contiguous ``uint8`` RGB array ``(H, W, 3)``.

    Raises :class:`ImageReadError` with a short reason for a missing, empty, unreadable, non-image,
    truncated or corrupt file, and for one larger than ``max_pixels`` when ``downscale`` is False.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageReadError("file not found", path) from None
    except OSError as err:
        raise ImageReadError(f"unreadable file ({err.strerror or err})", path) from None
    if size == 0:
        raise ImageReadError("empty file (0 bytes)", path)
    return _decode(path, path, max_pixels, downscale)


def decode_rgb(data: bytes, name: str, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               downscale: bool = True) -> np.ndarray:
    """:func:`read_rgb` of an encoded image held in memory (a RecordIO record, a ``.bin`` entry): the very
    same pixels as reading those bytes from a file. ``name`` says where they came from in errors."""
    if not data:
        raise ImageReadError("empty image (0 bytes)", name)
    return _decode(io.BytesIO(data), name, max_pixels, downscale)


def _decode(source: Path | io.BytesIO, path: str | os.PathLike, max_pixels: int | None,
            downscale: bool) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # We apply our own pixel limit below; Pillow still refuses absurd sizes with an error.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                width, height = image.size
                if width <= 0 or height <= 0:
                    raise ImageReadError(f"image has no pixels ({width}x{height})", path)
                pixels = width * height
                if max_pixels and pixels > max_pixels:
                    if not downscale:
                        raise ImageReadError(
                            f"image too large ({width}x{height} > max_pixels={max_pixels})", path)
                    if image.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale, at least the target
                        factor = math.sqrt(max_pixels / pixels)
                        image.draft(image.mode, (max(1, int(width * factor)), max(1, int(height * factor))))
                image.load()
                image = _upright(image)
                if max_pixels and image.size[0] * image.size[1] > max_pixels:
                    factor = math.sqrt(max_pixels / (image.size[0] * image.size[1]))
                    target = (max(1, int(image.size[0] * factor)), max(1, int(image.size[1] * factor)))
                    exact = image.mode.startswith(("I", "F", "P", "1"))  # no averaging of indices
                    image = image.resize(target, Image.Resampling.NEAREST if exact else Image.Resampling.BOX)
                array = _to_rgb_array(image)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError("not an image (unknown or unsupported format)", path) from None
    except Image.DecompressionBombError as err:
        raise ImageReadError(f"image too large to decode safely ({err})", path) from None
    except PermissionError as err:
        raise ImageReadError(f"unreadable file ({err.strerror or err})", path) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ImageReadError(f"truncated or corrupt image ({message})", path) from None
    except MemoryError:
        raise ImageReadError("image too large: out of memory while decoding", path) from None
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageReadError(f"unexpected decoded shape {array.shape}", path)
    return np.ascontiguousarray(array)

