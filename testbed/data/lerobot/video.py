"""mp4 encoding of camera streams for LeRobot ``video`` features, with PyAV.

Each episode's stream goes into its own file (``file-XXX.mp4``), so its
``from_timestamp`` is 0 and its ``to_timestamp`` is its duration. H.264 in
yuv420p is lossy: frames read back are close to, not equal to, the input.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from testbed.errors import DatasetError

CODEC = "libx264"
PIX_FMT = "yuv420p"


def _av() -> ModuleType:
    try:
        import av
    except ImportError as exc:
        raise DatasetError("video features need PyAV: pip install 'testbed[video]'") from exc
    return av


def video_info(height: int, width: int, fps: float) -> dict[str, Any]:
    """The ``info`` entry LeRobot keeps for a ``video`` feature in ``meta/info.json``."""
    return {
        "video.height": height,
        "video.width": width,
        "video.codec": "h264",
        "video.pix_fmt": PIX_FMT,
        "video.is_depth_map": False,
        "video.fps": fps,
        "video.channels": 3,
        "has_audio": False,
    }


def encode_video(path: Path, frames: np.ndarray, fps: float) -> float:
    """Write uint8 ``(frames, height, width, 3)`` as an H.264 mp4 at ``fps``.

    Returns:
        the stream's duration in seconds (frames / fps).

    Raises:
        DatasetError: if height or width is odd (yuv420p needs even sizes).
    """
    av = _av()
    count, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise DatasetError(f"{path}: video frames need even height and width, got {height}x{width}")
    rate = Fraction(fps).limit_denominator(1000)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        # short GOP: LeRobot seeks to each requested frame
        stream = container.add_stream(CODEC, rate=rate, options={"g": "2", "crf": "18"})
        stream.width, stream.height, stream.pix_fmt = width, height, PIX_FMT
        stream.time_base = 1 / rate
        for index in range(count):
            frame = av.VideoFrame.from_ndarray(frames[index], format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return count / fps


def decode_video(path: Path, from_s: float, to_s: float) -> np.ndarray:
    """Decode frames with timestamps in ``[from_s, to_s)`` into uint8 ``(frames, height, width, 3)``.

    Raises:
        DatasetError: naming ``path`` if it is missing or not a decodable video.
    """
    av = _av()
    if not path.exists():
        raise DatasetError(f"{path}: video file is missing")
    out: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                t = float(frame.time) if frame.time is not None else 0.0
                if from_s - 1e-6 <= t < to_s - 1e-6:
                    out.append(frame.to_ndarray(format="rgb24"))
    except av.FFmpegError as exc:
        raise DatasetError(f"{path}: cannot decode video ({exc})") from exc
    if not out:
        raise DatasetError(f"{path}: no frames between {from_s:.3f} s and {to_s:.3f} s")
    return np.stack(out)
