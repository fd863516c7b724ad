"""Run in LeRobot's environment (`compat/envcache.py lerobot`): load a dataset this project wrote.

Usage: python lerobot_load.py DATASET_ROOT EXPECTED.npz
Exits 1 with a message per mismatch. EXPECTED.npz holds, per episode e,
``e{e}/<feature>`` arrays as written, and ``tolerance/<feature>`` for lossy cameras.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset


def main(root: Path, expected_path: Path) -> int:
    expected = np.load(expected_path)
    info = json.loads((root / "meta/info.json").read_text())
    ds = LeRobotDataset("testbed/compat", root=root, video_backend="pyav")
    problems = []
    if ds.num_episodes != info["total_episodes"] or len(ds) != info["total_frames"]:
        problems.append(
            f"episodes/frames: lerobot sees {ds.num_episodes}/{len(ds)}, info says "
            f"{info['total_episodes']}/{info['total_frames']}"
        )
    cameras = ds.meta.camera_keys
    missing_stats = [k for k in info["features"] if k not in ds.meta.stats and info["features"][k]["dtype"] != "string"]
    if missing_stats:
        problems.append(f"stats.json lacks {missing_stats}")
    checked = 0
    for episode in range(ds.num_episodes):
        start = int(ds.meta.episodes[episode]["dataset_from_index"])
        length = int(ds.meta.episodes[episode]["length"])
        for frame in sorted({0, length // 2, length - 1}):
            item = ds[start + frame]
            for key in info["features"]:
                name = f"e{episode}/{key}"
                if name not in expected.files:
                    continue
                want = expected[name][frame]
                got = item[key].numpy()
                if key in cameras:
                    # LeRobot returns (3, H, W) float in [0, 1]
                    got = np.transpose(got, (1, 2, 0)) * 255.0
                    tol = float(expected[f"tolerance/{key}"])
                    err = float(np.mean(np.abs(got - want.astype(np.float64))))
                    if got.shape != want.shape or err > tol:
                        problems.append(f"{name}[{frame}]: shape {got.shape} vs {want.shape}, mean abs error {err:.3f}")
                elif not np.array_equal(np.asarray(got).reshape(want.shape), want):
                    problems.append(f"{name}[{frame}]: {got} != {want}")
                checked += 1
            if item["task"] != str(expected[f"e{episode}/task"]):
                problems.append(f"episode {episode}: task {item['task']!r}")
    for p in problems:
        print("FAIL", p)
    print(
        json.dumps(
            {
                "root": str(root),
                "episodes": ds.num_episodes,
                "frames": len(ds),
                "values_checked": checked,
                "cameras": cameras,
                "problems": len(problems),
            }
        )
    )
    return 1 if problems or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
