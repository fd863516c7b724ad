"""Prove LeRobot compatibility both ways; run from the project's venv.

1. This project writes two datasets (PNG cameras, and mp4 cameras) and LeRobot,
   in its own environment (``envcache.py lerobot``), loads them (``lerobot_load.py``).
2. LeRobot writes a dataset (``lerobot_write.py``) and this project reads it,
   compares the arrays and validates it.

Usage: python compat/check.py [--venv DIR] [--workdir DIR]
Without ``--venv`` the cached LeRobot environment is used, built first if missing.
Prints one JSON summary and exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from envcache import ensure_env

from testbed.data.lerobot import FeatureSpec, LeRobotWriter, read_dataset, validate_dataset
from testbed.venv_cache import VenvBuildError

HERE = Path(__file__).resolve().parent
CAMERA = ("height", "width", "channel")


def write_ours(root: Path, expected_path: Path, *, video: bool) -> None:
    """Write 3 episodes with this project's writer and save what was written."""
    rng = np.random.default_rng(3)
    features = {
        "observation.state": FeatureSpec("float32", (7,), [f"joint_{i}" for i in range(7)]),
        "observation.environment_state": FeatureSpec("float32", (3,), ["part_x", "part_y", "part_z"]),
        "action": FeatureSpec("float32", (7,), [f"joint_{i}" for i in range(7)]),
        "observation.images.top": FeatureSpec("image", (24, 32, 3), CAMERA),
    }
    expected: dict[str, np.ndarray] = {"tolerance/observation.images.top": np.array(8.0 if video else 0.0)}
    with LeRobotWriter(root, fps=20, robot_type="cobot7", features=features, video=video) as writer:
        for episode in range(3):
            task = ["pick the part", "place the part"][episode % 2]
            writer.start_episode(task)
            length = 10 + 5 * episode
            arrays = {
                "observation.state": rng.normal(size=(length, 7)).astype(np.float32),
                "observation.environment_state": rng.normal(size=(length, 3)).astype(np.float32),
                "action": rng.normal(size=(length, 7)).astype(np.float32),
                "observation.images.top": (
                    np.broadcast_to(np.linspace(20, 230, length)[:, None, None, None], (length, 24, 32, 3))
                    if video
                    else rng.integers(0, 256, size=(length, 24, 32, 3))
                ).astype(np.uint8),
            }
            for i in range(length):
                writer.add_frame({k: np.ascontiguousarray(v[i]) for k, v in arrays.items()}, i / 20)
            writer.end_episode({"success": bool(episode % 2)})
            for key, values in arrays.items():
                expected[f"e{episode}/{key}"] = values
            expected[f"e{episode}/task"] = np.array(task)
    np.savez(expected_path, **expected)


def read_lerobots(root: Path, expected_path: Path) -> list[str]:
    """Read a LeRobot-written dataset and compare with what LeRobot was given."""
    expected = np.load(expected_path)
    ds = read_dataset(root)
    problems = [f"validate: {p}" for p in validate_dataset(root)]
    for episode in range(ds.num_episodes):
        arrays = ds.episode(episode)
        if ds.episodes[episode].tasks != (str(expected[f"e{episode}/task"]),):
            problems.append(f"episode {episode}: tasks {ds.episodes[episode].tasks}")
        for key, spec in ds.features.items():
            name = f"e{episode}/{key}"
            if name not in expected.files:
                continue
            want, got = expected[name], arrays[key]
            if spec.dtype == "video":
                err = float(np.mean(np.abs(got.astype(np.float64) - want))) if got.shape == want.shape else -1
                if not 0 <= err <= 8.0:
                    problems.append(f"{name}: shape {got.shape} vs {want.shape}, mean abs error {err:.3f}")
            elif got.shape != want.shape or not np.array_equal(got, want):
                problems.append(f"{name}: arrays differ (shapes {got.shape} vs {want.shape})")
    return problems


def run(venv: Path, workdir: Path) -> dict[str, object]:
    """Run both directions; return a summary with a ``problems`` list."""
    python = venv / "bin" / "python"
    problems: list[str] = []
    summary: dict[str, object] = {}
    for label, video in (("ours_png", False), ("ours_mp4", True)):
        root, expected = workdir / label, workdir / f"{label}.npz"
        write_ours(root, expected, video=video)
        done = subprocess.run(
            [str(python), str(HERE / "lerobot_load.py"), str(root), str(expected)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        summary[f"lerobot_loads_{label}"] = done.returncode == 0
        if done.returncode != 0:
            problems.append(f"LeRobot failed to load {label}:\n{done.stdout}{done.stderr[-3000:]}")
    root, expected = workdir / "lerobot_written", workdir / "lerobot_written.npz"
    done = subprocess.run(
        [str(python), str(HERE / "lerobot_write.py"), str(root), str(expected)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        problems.append(f"LeRobot failed to write its dataset:\n{done.stdout}{done.stderr[-3000:]}")
        summary["testbed_reads_lerobot"] = False
    else:
        found = read_lerobots(root, expected)
        summary["testbed_reads_lerobot"] = not found
        problems += found
    versions = subprocess.run(
        [str(python), "-c", "import lerobot, torch; print(lerobot.__version__, torch.__version__)"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary["lerobot_torch"] = versions.stdout.strip()
    summary["problems"] = problems
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=None, help="LeRobot's environment (default: the cached one)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if args.venv is None:
        try:
            args.venv = ensure_env("lerobot")
        except VenvBuildError as exc:
            print(f"compat/check.py: {exc}", file=sys.stderr)
            return 2
    elif not (args.venv / "bin" / "python").exists():
        print(f"{args.venv}: no python in it; leave out --venv to use the cached LeRobot environment",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        summary = run(args.venv, workdir)
    for problem in summary["problems"]:  # type: ignore[union-attr]
        print("FAIL", problem, file=sys.stderr)
    print(json.dumps(summary | {"problems": len(summary["problems"])}))  # type: ignore[arg-type]
    return 1 if summary["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
