"""PNG encoding of camera frames stored as LeRobot ``image`` features.

LeRobot (through Hugging Face ``datasets``) stores an ``image`` feature as a
struct column ``{bytes: binary, path: string}`` holding the encoded file.
Pillow is imported on first use, so state-only datasets do not need it.
"""

from __future__ import annotations

import io
from types import ModuleType

import numpy as np

from testbed.errors import DatasetError


def _pil() -> ModuleType:
    try:
        from PIL import Image
    except ImportError as exc:
        raise DatasetError("camera features need Pillow to encode PNG frames: pip install 'testbed[video]'") from exc
    return Image


def encode_png(frame: np.ndarray) -> bytes:
    """Encode a uint8 ``(height, width, 3)`` frame as PNG bytes."""
    buffer = io.BytesIO()
    # compress_level 1: the size gain of higher levels costs ~5x the time
    _pil().fromarray(frame, mode="RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def decode_image(data: bytes, where: str) -> np.ndarray:
    """Decode PNG (or any Pillow-readable) bytes into a uint8 ``(height, width, 3)`` array.

    Raises:
        DatasetError: naming ``where`` if the bytes are not an image.
    """
    image_module = _pil()
    try:
        with image_module.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{where}: cannot decode image bytes ({exc})") from exc
