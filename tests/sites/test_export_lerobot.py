"""A LeRobot export sends only what meta/info.json declares and the rules decided; the rest is refused or audited."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from testbed.data.inspect import check_dataset
from testbed.data.lerobot import FeatureSpec, LeRobotWriter
from testbed.errors import ComplianceDenied
from testbed.sites.audit import verify
from testbed.sites.export import export_dataset

REPO = Path(__file__).resolve().parents[2]
DEMOS = REPO / "datasets" / "expert_demos"
KR_ORDERS = REPO / "datasets" / "kr_electronics_orders"
DATA = "data/chunk-000/file-000.parquet"
EPISODES = "meta/episodes/chunk-000/file-000.parquet"


def to_us(profiles, source, out, **kwargs):
    return export_dataset(source, out, to_site="us-west", to_jurisdiction="US", profiles=profiles, **kwargs)


def audit_records(path):
    assert verify(path).ok, verify(path).describe(path)
    return [json.loads(line) for line in path.read_text().splitlines()]


def every_byte(root):
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


@pytest.fixture
def demos(tmp_path):
    src = tmp_path / "demos"
    shutil.copytree(DEMOS, src)
    return src


def add_operator_column(src):
    table = pq.read_table(src / DATA)
    pq.write_table(table.append_column("operator_id", pa.array(["OP-4711"] * table.num_rows)), src / DATA)


def test_an_undeclared_parquet_column_is_refused_named_and_audited(profiles, demos, tmp_path):
    add_operator_column(demos)
    log = tmp_path / "origin" / "audit.jsonl"
    with pytest.raises(ComplianceDenied, match=r"column operator_id \(in data/chunk-000/file-000\.parquet\).*"
                                               r"leave it behind with --drop operator_id"):
        to_us(profiles, demos, tmp_path / "out", audit=log)
    assert not (tmp_path / "out").exists()
    (record,) = audit_records(log)
    assert record["kind"] == "dataset_export_refused" and record["to_jurisdiction"] == "US"
    assert [(r["kind"], r["name"], r["where"]) for r in record["refused"]] == [("column", "operator_id", [DATA])]


def test_a_stray_file_in_the_dataset_is_refused_named_and_audited(profiles, demos, tmp_path):
    shutil.copy(KR_ORDERS / "orders.csv", demos / "orders.csv")
    log = tmp_path / "origin" / "audit.jsonl"
    with pytest.raises(ComplianceDenied, match=r"file orders\.csv; .*--drop orders\.csv"):
        to_us(profiles, demos, tmp_path / "out", audit=log)
    assert not (tmp_path / "out").exists()
    (record,) = audit_records(log)
    assert [(r["kind"], r["name"]) for r in record["refused"]] == [("file", "orders.csv")]


def test_the_reviewers_two_leaks_left_behind_on_request_never_reach_the_export(profiles, demos, tmp_path):
    add_operator_column(demos)
    shutil.copy(KR_ORDERS / "orders.csv", demos / "orders.csv")
    log = tmp_path / "origin" / "audit.jsonl"
    out = tmp_path / "out"
    report = to_us(profiles, demos, out, drop=["operator_id", "orders.csv"], audit=log)
    assert check_dataset(out) == []
    assert not (out / "orders.csv").exists()
    assert "operator_id" not in pq.read_schema(out / DATA).names
    exported = every_byte(out)
    assert b"OP-4711" not in exported
    first_order = (KR_ORDERS / "orders.csv").read_text().splitlines()[1].split(",")
    assert all(value.encode() not in exported for value in first_order if len(value) > 6)
    left = {(x["kind"], x["name"]) for x in report.left_behind}
    assert left == {("column", "operator_id"), ("file", "orders.csv")}
    on_disk = json.loads((out / "export_report.json").read_text())
    assert {(x["kind"], x["name"]) for x in on_disk["left_behind"]} == left
    assert "left behind what meta/info.json does not declare" in yaml.safe_load((out / "card.yaml").read_text())[
        "terms"]["note"]
    (record,) = audit_records(log)
    assert record["kind"] == "dataset_export"
    assert {(x["kind"], x["name"]) for x in record["left_behind"]} == left


def test_a_clean_dataset_exports_whole_and_validates(profiles, tmp_path):
    out = tmp_path / "out"
    log = tmp_path / "origin" / "audit.jsonl"
    report = to_us(profiles, DEMOS, out, audit=log)
    assert check_dataset(out) == []
    assert report.left_behind == ()
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(
        ["card.yaml", "export_report.json", "meta/info.json", "meta/stats.json", "meta/tasks.parquet", EPISODES, DATA])
    assert pq.read_table(out / DATA).equals(pq.read_table(DEMOS / DATA))
    source_episodes = pq.read_table(DEMOS / EPISODES)
    assert pq.read_table(out / EPISODES).select(source_episodes.column_names).equals(source_episodes)
    assert json.loads((out / "meta/info.json").read_text()) == json.loads((DEMOS / "meta/info.json").read_text())
    # a second export to the same log continues its chain
    to_us(profiles, DEMOS, tmp_path / "again", audit=log)
    assert [r["kind"] for r in audit_records(log)] == ["dataset_export", "dataset_export"]


def test_undeclared_statistics_episode_columns_and_info_keys_are_refused(profiles, demos, tmp_path):
    episodes = pq.read_table(demos / EPISODES)
    operators = pa.array([f"OP-{i}" for i in range(episodes.num_rows)])
    episodes = episodes.append_column("operator", operators).append_column(
        "stats/shift_lead/min", pa.array([[1.0]] * episodes.num_rows))
    pq.write_table(episodes, demos / EPISODES)
    stats = json.loads((demos / "meta/stats.json").read_text())
    stats["line_speed"] = stats["action"]
    (demos / "meta/stats.json").write_text(json.dumps(stats))
    info = json.loads((demos / "meta/info.json").read_text())
    info["plant_notes"] = "line 3 runs at 14 m/min"
    (demos / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(ComplianceDenied) as caught:
        to_us(profiles, demos, tmp_path / "out")
    message = str(caught.value)
    for named in ("info key meta/info.json:plant_notes", f"column operator (in {EPISODES})",
                  f"column shift_lead (in {EPISODES} stats)", "column line_speed (in meta/stats.json)"):
        assert named in message
    out = tmp_path / "out"
    to_us(profiles, demos, out, drop=["operator", "shift_lead", "line_speed", "meta/info.json:plant_notes"])
    assert check_dataset(out) == []
    exported = every_byte(out / "meta") + every_byte(out / "data")
    assert b"OP-1" not in exported and b"14 m/min" not in exported and b"line_speed" not in exported
    assert "success" in pq.read_schema(out / EPISODES).names  # the recorder's outcome column stays


def card_for(root, data_classes):
    card = yaml.safe_load((DEMOS / "card.yaml").read_text())
    card["data_classes"] = data_classes
    (root / "card.yaml").write_text(yaml.safe_dump(card))


def test_video_files_go_with_their_feature_only(profiles, tmp_path):
    src = tmp_path / "cams"
    features = {"observation.images.top": FeatureSpec("image", (16, 16, 3), ["height", "width", "channel"]),
                "action": FeatureSpec("float32", (2,), ["x", "y"])}
    with LeRobotWriter(src, fps=10, robot_type="cobot7", features=features, video=True) as writer:
        writer.start_episode("look")
        for i in range(6):
            writer.add_frame({"observation.images.top": np.full((16, 16, 3), 20 * i, np.uint8),
                              "action": np.zeros(2, np.float32)}, i / 10)
        writer.end_episode()
    card_for(src, {"observation.images.top": "public", "action": "public"})
    video = "videos/observation.images.top/chunk-000/file-000.mp4"
    stray = src / "videos/observation.images.face/chunk-000/file-000.mp4"
    stray.parent.mkdir(parents=True)
    shutil.copy(src / video, stray)
    with pytest.raises(ComplianceDenied, match=re.escape("file videos/observation.images.face/chunk-000/file-000.mp4")):
        to_us(profiles, src, tmp_path / "refused")
    stray.unlink()
    to_us(profiles, src, tmp_path / "whole")
    assert check_dataset(tmp_path / "whole") == []
    assert (tmp_path / "whole" / video).read_bytes() == (src / video).read_bytes()
    to_us(profiles, src, tmp_path / "blind", drop=["observation.images.top"])
    assert check_dataset(tmp_path / "blind") == []
    assert not (tmp_path / "blind" / "videos").exists()
    assert not any(c.startswith(("videos/", "stats/observation.images"))
                   for c in pq.read_schema(tmp_path / "blind" / EPISODES).names)


def build_v21(root):
    """Two episodes in LeRobot v2.1 (one parquet per episode, JSON-lines metadata), with a leak in each file."""
    (root / "meta").mkdir(parents=True)
    (root / "data/chunk-000").mkdir(parents=True)
    scalar = {"shape": [1], "names": None}
    features = {"observation.state": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
                **{k: {"dtype": "float32" if k == "timestamp" else "int64", **scalar}
                   for k in ("timestamp", "frame_index", "episode_index", "index", "task_index")}}
    info = {"codebase_version": "v2.1", "robot_type": "scara4", "total_episodes": 2, "total_frames": 7,
            "total_tasks": 1, "total_chunks": 1, "total_videos": 0, "chunks_size": 1000, "fps": 10,
            "splits": {"train": "0:2"}, "video_path": None, "features": features,
            "data_path": "data/chunk-000/episode_{episode_index:06d}.parquet"}
    (root / "meta/info.json").write_text(json.dumps(info))
    (root / "meta/tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": "pick"}) + "\n")
    episodes, stats, start = [], [], 0
    for episode, n in enumerate((3, 4)):
        state = np.arange(2 * n, dtype=np.float32).reshape(n, 2)
        table = pa.table({"observation.state": pa.FixedSizeListArray.from_arrays(pa.array(state.ravel()), 2),
                          "timestamp": pa.array(np.arange(n, dtype=np.float32) / 10),
                          "frame_index": pa.array(np.arange(n)), "episode_index": pa.array(np.full(n, episode)),
                          "index": pa.array(np.arange(start, start + n)), "task_index": pa.array(np.zeros(n, int)),
                          "badge": pa.array(["B-77"] * n)})
        pq.write_table(table, root / f"data/chunk-000/episode_{episode:06d}.parquet")
        episodes.append({"episode_index": episode, "tasks": ["pick"], "length": n, "shift_lead": "Kim"})
        values = {k: table.column(k).combine_chunks() for k in features}
        stats.append({"episode_index": episode, "stats": {k: _stats(v) for k, v in values.items()}})
        start += n
    (root / "meta/episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    (root / "meta/episodes_stats.jsonl").write_text("".join(json.dumps(s) + "\n" for s in stats))
    card_for(root, {"observation.state": "public"})


def _stats(column):
    if pa.types.is_fixed_size_list(column.type):
        values = column.flatten().to_numpy().reshape(len(column), -1).astype(np.float64)
    else:
        values = column.to_numpy().reshape(-1, 1).astype(np.float64)
    return {"min": values.min(0).tolist(), "max": values.max(0).tolist(), "mean": values.mean(0).tolist(),
            "std": values.std(0).tolist(), "count": [len(values)]}


def test_a_v21_dataset_is_checked_and_written_the_same_way(profiles, tmp_path):
    src = tmp_path / "v21"
    build_v21(src)
    with pytest.raises(ComplianceDenied) as caught:
        to_us(profiles, src, tmp_path / "refused")
    assert "column badge (in data/chunk-000/episode_000000.parquet, data/chunk-000/episode_000001.parquet)" in str(
        caught.value)
    assert "column shift_lead (in meta/episodes.jsonl)" in str(caught.value)
    out = tmp_path / "out"
    to_us(profiles, src, out, drop=["badge", "shift_lead"])
    assert check_dataset(out) == []
    assert b"B-77" not in every_byte(out) and b"Kim" not in every_byte(out)


def test_an_export_parses_meta_info_json_once(profiles, demos, tmp_path, monkeypatch):
    info = demos / "meta" / "info.json"
    reads = []
    real = Path.read_text

    def counted(self, *args, **kwargs):
        if self == info:
            reads.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counted)
    report = to_us(profiles, demos, tmp_path / "out")
    assert report.by_action() == {"allow": ["observation.state", "observation.environment_state", "action"]}
    # parsed once, by the dataset reader; the card's provenance digest hashes its bytes (read_bytes) apart
    assert len(reads) == 1
