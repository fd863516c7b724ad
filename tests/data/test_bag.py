"""ROS 2 bag export: a hand-built run directory exported to MCAP and read back with rosbags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from testbed.data.bag import export_bag
from testbed.errors import DatasetError

ROBOTS = ("arm_a", "arm_b")
STEPS = 5
EPISODES = 2
JOINTS = ["j1", "j2", "j3"]


def _make_run(run_dir: Path) -> None:
    """Two robots, two episodes whose clocks both restart at 0, 20 Hz."""
    run_dir.mkdir()
    rows: dict[str, list] = {k: [] for k in ("t_s", "episode", "robot", "joint_names", "position", "command")}
    rows["tcp_pose_world"] = []
    for episode in range(EPISODES):
        for step in range(STEPS):
            for r, robot in enumerate(ROBOTS):
                rows["t_s"].append(step * 0.05)
                rows["episode"].append(episode)
                rows["robot"].append(robot)
                rows["joint_names"].append(JOINTS)
                rows["position"].append([0.1 * step + r, 0.2, -0.3 + episode])
                rows["command"].append([0.1 * step + r + 0.01, 0.2, -0.3 + episode])
                rows["tcp_pose_world"].append([0.4 + 0.01 * step, r * 0.5, 0.2, 0.0, 0.0, 0.0, 1.0])
    table = pa.table(
        {
            "t_s": pa.array(rows["t_s"], pa.float64()),
            "episode": pa.array(rows["episode"], pa.int32()),
            "robot": pa.array(rows["robot"], pa.string()),
            "joint_names": pa.array(rows["joint_names"], pa.list_(pa.string())),
            "position": pa.array(rows["position"], pa.list_(pa.float64())),
            "command": pa.array(rows["command"], pa.list_(pa.float64())),
            "tcp_pose_world": pa.array(rows["tcp_pose_world"], pa.list_(pa.float64())),
        }
    )
    pq.write_table(table, run_dir / "joint_states.parquet")
    events = [{"t": 0.0, "wall": 1.7e9, "episode": None, "kind": "run_start", "robot": None}]
    for episode in range(EPISODES):
        events += [
            {"t": 0.0, "wall": 1.7e9, "episode": episode, "kind": "episode_start", "robot": None},
            {
                "t": 0.1,
                "wall": 1.7e9,
                "episode": episode,
                "kind": "pick",
                "robot": "arm_a",
                "part": "capacitor",
            },
            {
                "t": 0.2,
                "wall": 1.7e9,
                "episode": episode,
                "kind": "episode_end",
                "robot": None,
                "success": True,
            },
        ]
    events.append({"t": 0.2, "wall": 1.7e9, "episode": None, "kind": "run_end", "robot": None})
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (run_dir / "scenario.yaml").write_text("name: hand_built\n")
    (run_dir / "metrics.json").write_text(json.dumps({"run_id": "r1", "success_rate": 1.0}))


def _read_back(bag: Path) -> dict[str, list[tuple[int, object]]]:
    store = get_typestore(Stores.ROS2_JAZZY)
    found: dict[str, list[tuple[int, object]]] = {}
    with Reader(bag) as reader:
        for conn, ns, raw in reader.messages():
            found.setdefault(conn.topic, []).append((ns, store.deserialize_cdr(raw, conn.msgtype)))
    return found


def test_exported_bag_reads_back_with_expected_counts(tmp_path: Path) -> None:
    _make_run(tmp_path / "run")
    result = export_bag(tmp_path / "run")
    assert list(result.path.glob("*.mcap")), "storage must be MCAP"
    found = _read_back(result.path)
    n_rows = EPISODES * STEPS * len(ROBOTS)
    per_robot = EPISODES * STEPS
    assert {topic: len(msgs) for topic, msgs in found.items()} == {
        **{f"/cell/{robot}/{leaf}": per_robot for robot in ROBOTS
           for leaf in ("joint_states", "joint_commands", "tcp_pose")},
        "/tf": n_rows,
        "/cell/events": 2 + 3 * EPISODES,
        "/clock": EPISODES * STEPS,
    }
    assert dict(result.message_counts) == {t: len(m) for t, m in found.items()}


def test_messages_carry_the_recorded_values(tmp_path: Path) -> None:
    _make_run(tmp_path / "run")
    found = _read_back(export_bag(tmp_path / "run", tmp_path / "out.bag").path)
    _, state = found["/cell/arm_a/joint_states"][0]
    assert state.header.frame_id == "arm_a"
    assert state.name == ["j1", "j2", "j3"]  # one topic per robot: the URDF's names
    np.testing.assert_allclose(state.position, [0.0, 0.2, -0.3])
    _, command = found["/cell/arm_a/joint_commands"][0]
    np.testing.assert_allclose(command.points[0].positions, [0.01, 0.2, -0.3])
    _, pose = found["/cell/arm_b/tcp_pose"][0]
    assert pose.header.frame_id == "world"
    np.testing.assert_allclose([pose.pose.position.x, pose.pose.position.y], [0.4, 0.5])
    tf_frames = {m.transforms[0].child_frame_id for _, m in found["/tf"]}
    assert tf_frames == {"arm_a/tcp", "arm_b/tcp"}  # unknown robot models: world -> tcp only
    kinds = [json.loads(m.data)["kind"] for _, m in found["/cell/events"]]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"


def test_restarting_episode_clocks_become_one_monotone_timeline(tmp_path: Path) -> None:
    _make_run(tmp_path / "run")
    found = _read_back(export_bag(tmp_path / "run").path)
    clock_ns = [ns for ns, _ in found["/clock"]]
    assert clock_ns == sorted(clock_ns) and len(set(clock_ns)) == len(clock_ns)
    event_ns = {json.loads(m.data)["kind"] + str(json.loads(m.data)["episode"]): ns
                for ns, m in found["/cell/events"]}
    # episode 1 starts after episode 0 ended, and its events moved with its joint states
    assert event_ns["episode_start1"] > event_ns["episode_end0"]
    second_episode_states = [ns for ns, m in found["/cell/arm_a/joint_states"] if m.position[2] > 0.5]
    assert min(second_episode_states) == event_ns["episode_start1"]


def test_existing_output_is_refused(tmp_path: Path) -> None:
    _make_run(tmp_path / "run")
    (tmp_path / "run/bag").mkdir()
    with pytest.raises(DatasetError, match="exists already"):
        export_bag(tmp_path / "run")


def test_bad_event_line_is_located(tmp_path: Path) -> None:
    _make_run(tmp_path / "run")
    with (tmp_path / "run/events.jsonl").open("a") as fh:
        fh.write('{"t": "soon", "episode": 0, "kind": "drop"}\n')
    with pytest.raises(DatasetError, match=r"events.jsonl:9 field t: expected sim seconds"):
        export_bag(tmp_path / "run")


def test_missing_joint_states_is_named(tmp_path: Path) -> None:
    _make_run(tmp_path / "run")
    (tmp_path / "run/joint_states.parquet").unlink()
    with pytest.raises(DatasetError, match=r"joint_states\.parquet: not found"):
        export_bag(tmp_path / "run")
