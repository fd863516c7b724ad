"""Run in LeRobot's environment (`compat/envcache.py lerobot`): write a dataset with LeRobot's own API.

Usage: python lerobot_write.py OUT_ROOT EXPECTED.npz
Writes 3 episodes of state/action, a PNG camera (``image``) and an mp4 camera
(``video``, LeRobot's default codec) and saves the arrays it wrote to EXPECTED.npz.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset

FEATURES = {
    "observation.state": {"dtype": "float32", "shape": (6,), "names": [f"joint_{i}" for i in range(6)]},
    "action": {"dtype": "float32", "shape": (6,), "names": [f"joint_{i}" for i in range(6)]},
    "observation.images.top": {"dtype": "image", "shape": (24, 32, 3), "names": ["height", "width", "channel"]},
    "observation.images.wrist": {"dtype": "video", "shape": (24, 32, 3), "names": ["height", "width", "channel"]},
}


def main(root: Path, expected_path: Path) -> int:
    rng = np.random.default_rng(7)
    ds = LeRobotDataset.create(
        "testbed/lerobot-written", fps=10, features=FEATURES, root=root, robot_type="cobot7", use_videos=True
    )
    expected: dict[str, np.ndarray] = {}
    for episode in range(3):
        length = 12 + 3 * episode
        task = ["pick the part", "place the part"][episode % 2]
        arrays = {
            "observation.state": rng.normal(size=(length, 6)).astype(np.float32),
            "action": rng.normal(size=(length, 6)).astype(np.float32),
            # smooth images so the lossy video keeps them close
            "observation.images.top": rng.integers(0, 256, size=(length, 24, 32, 3), dtype=np.uint8),
            "observation.images.wrist": np.broadcast_to(
                np.linspace(20, 230, length)[:, None, None, None], (length, 24, 32, 3)
            ).astype(np.uint8),
        }
        for i in range(length):
            ds.add_frame({key: values[i] for key, values in arrays.items()} | {"task": task})
        ds.save_episode()
        for key, values in arrays.items():
            expected[f"e{episode}/{key}"] = values
        expected[f"e{episode}/task"] = np.array(task)
    ds.finalize()
    np.savez(expected_path, **expected)
    print(f"wrote {ds.num_episodes} episodes, {len(ds)} frames to {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
