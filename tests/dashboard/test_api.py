"""Every REST endpoint and the WebSocket's refusals, through the real app, on real run records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from dashboard_helpers import REPO, TOKEN, Recorded
from fastapi.testclient import TestClient

from testbed.dashboard import Dashboard, create_app
from testbed.dashboard.access import check_bind
from testbed.errors import BridgeConfigError

LOOPBACK = ("127.0.0.1", 50000)
REMOTE = ("203.0.113.7", 50000)  # TEST-NET-3: another host
ENDPOINTS = {"/api/info", "/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/metrics", "/api/runs/{run_id}/events",
             "/api/runs/{run_id}/scenario", "/api/runs/{run_id}/joints", "/api/runs/{run_id}/latency",
             "/api/runs/{run_id}/sites", "/api/runs/{run_id}/logs/{name}", "/api/compare", "/api/policies",
             "/api/launch-files", "/api/runs/{run_id}/stop"}


@pytest.fixture
def runs(recorded: Recorded, tmp_path: Path) -> Recorded:
    """A copy of the recorded runs this test may change."""
    runs_dir = tmp_path / "runs"
    shutil.copytree(recorded.runs_dir, runs_dir)
    return Recorded(runs_dir, recorded.good, recorded.bad, recorded.sites)


def client_for(runs_dir: Path, token: str | None = TOKEN, client: tuple[str, int] = LOOPBACK) -> TestClient:
    return TestClient(create_app(Dashboard(runs_dir, REPO / "launch", token)), client=client)


@pytest.fixture
def api(runs: Recorded) -> TestClient:
    with client_for(runs.runs_dir) as client:
        yield client


# ------------------------------------------------------------------ runs list


def test_runs_list_has_every_recorded_run_with_its_figures(api, runs):
    body = api.get("/api/runs").json()
    rows = {r["run_id"]: r for r in body["runs"]}
    assert set(rows) == {runs.good, runs.bad, runs.sites} and body["total"] == 3
    good = rows[runs.good]
    assert good["status"] == "finished" and good["scenario"] == "factory_cell" and good["policy"] == "expert-gp7"
    assert good["success_rate"] == 1.0 and good["parts_per_min"] > 0 and good["cycle_time_s"] > 0
    assert good["safety_stops"] == 0 and good["started"].endswith("+00:00")
    assert rows[runs.bad]["success_rate"] == 0.0
    assert rows[runs.sites]["sites"] is True and good["sites"] is False


def test_runs_list_sorts_by_success_rate_both_ways(api, runs):
    ascending = [r["run_id"] for r in api.get("/api/runs?sort=success_rate&order=asc").json()["runs"]]
    descending = [r["run_id"] for r in api.get("/api/runs?sort=success_rate&order=desc").json()["runs"]]
    assert ascending[0] == runs.bad and descending[-1] == runs.bad


@pytest.mark.parametrize("key", ["scenario", "policy", "parts_per_min", "cycle_time_s", "safety_stops", "date"])
def test_runs_list_sorts_by_each_table_column(api, key):
    rows = api.get(f"/api/runs?sort={key}&order=asc").json()["runs"]
    column = "started_unix" if key == "date" else key
    values = [r[column] for r in rows if r[column] is not None]
    assert values == sorted(values)


def test_runs_list_filters_by_scenario_and_status(api, runs):
    assert [r["run_id"] for r in api.get("/api/runs?scenario=trilateral").json()["runs"]] == [runs.sites]
    assert api.get("/api/runs?status=live").json()["runs"] == []
    assert len(api.get("/api/runs?policy=expert-gp7").json()["runs"]) == 3


def test_runs_list_refuses_an_unknown_sort_key_naming_the_field(api):
    response = api.get("/api/runs?sort=colour")
    assert response.status_code == 422
    assert response.json()["field"] == "sort" and "sort" in response.json()["message"]


def test_runs_list_shows_aborted_and_incomplete_runs(api, runs):
    aborted = runs.runs_dir / "aborted-run"
    aborted.mkdir()
    (aborted / "events.jsonl").write_text(
        json.dumps({"t": 0, "wall": 1.0, "episode": None, "kind": "run_start", "robot": None, "scenario": "x"}) + "\n"
        + json.dumps({"t": 0, "wall": 2.0, "episode": None, "kind": "run_aborted", "robot": None,
                      "reason": "interrupted (terminated by SIGTERM)"}) + "\n")
    (runs.runs_dir / "half-run").mkdir()
    rows = {r["run_id"]: r for r in api.get("/api/runs").json()["runs"]}
    assert rows["aborted-run"]["status"] == "aborted" and "SIGTERM" in rows["aborted-run"]["reason"]
    assert rows["half-run"]["status"] == "incomplete"


def test_hidden_folders_of_the_runs_folder_are_not_runs(api, runs):
    (runs.runs_dir / ".launches").mkdir()
    assert ".launches" not in {r["run_id"] for r in api.get("/api/runs").json()["runs"]}


# ------------------------------------------------------------------ one run


def test_one_run_has_its_row_robots_and_seed(api, runs):
    body = api.get(f"/api/runs/{runs.good}").json()
    assert body["run_id"] == runs.good and body["robots"] == ["arm1"] and body["seed"] == 0
    assert body["controllable"] is False


def test_an_unknown_run_id_is_404_with_a_message(api):
    response = api.get("/api/runs/no-such-run/metrics")
    assert response.status_code == 404
    runs_dir = api.app.state.dashboard.records.runs_dir
    assert response.json()["detail"] == f"unknown run id 'no-such-run' (no such run in {runs_dir}/)"


@pytest.mark.parametrize("path", [
    "/api/runs/../metrics",
    "/api/runs/..%2F..%2Fetc%2Fpasswd/metrics",
    "/api/runs/%2E%2E/metrics",
    "/api/runs/..%5Cwindows/events",
    "/api/runs/%2Fetc%2Fpasswd/scenario",
    "/api/runs/a..b/metrics",
])
def test_run_ids_that_leave_the_runs_folder_are_refused(api, path):
    response = api.get(path)
    assert response.status_code in (404, 422), response.text
    assert "root:" not in response.text


def test_dot_dot_as_a_run_id_is_refused_naming_the_field(api):
    response = api.get("/api/runs/%2E%2E/events")
    assert response.status_code == 422 and response.json()["field"] == "run_id"


def test_a_symlink_out_of_the_runs_folder_is_not_a_run(api, runs, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "metrics.json").write_text("{}")
    (runs.runs_dir / "sneaky").symlink_to(outside)
    assert api.get("/api/runs/sneaky/metrics").status_code == 404


def test_metrics_of_a_finished_run_are_its_metrics_json(api, runs):
    body = api.get(f"/api/runs/{runs.good}/metrics").json()
    assert body == json.loads((runs.runs_dir / runs.good / "metrics.json").read_text())


def test_metrics_of_a_run_without_them_is_404_saying_why(api, runs):
    (runs.runs_dir / "half-run").mkdir()
    response = api.get("/api/runs/half-run/metrics")
    assert response.status_code == 404 and "no metrics.json yet" in response.json()["detail"]


def test_events_come_in_pages(api, runs):
    total = len((runs.runs_dir / runs.good / "events.jsonl").read_text().splitlines())
    first = api.get(f"/api/runs/{runs.good}/events?limit=5").json()
    assert first["total"] == total and len(first["events"]) == 5 and first["next_offset"] == 5
    second = api.get(f"/api/runs/{runs.good}/events?offset=5&limit=5").json()
    assert second["events"][0] != first["events"][-1]
    last = api.get(f"/api/runs/{runs.good}/events?offset={total - 1}").json()
    assert last["events"][0]["kind"] == "run_end" and last["next_offset"] is None


def test_events_filter_by_kind_and_episode(api, runs):
    places = api.get(f"/api/runs/{runs.good}/events?kind=place&episode=1").json()["events"]
    assert places and all(e["kind"] == "place" and e["episode"] == 1 for e in places)


def test_events_refuse_a_zero_page_naming_the_field(api, runs):
    response = api.get(f"/api/runs/{runs.good}/events?limit=0")
    assert response.status_code == 422 and response.json()["field"] == "limit"


def test_scenario_is_the_resolved_launch_file(api, runs):
    body = api.get(f"/api/runs/{runs.good}/scenario").json()
    assert body["scenario"]["name"] == "factory_cell" and body["scenario"]["episodes"] == 2
    assert body["yaml"].startswith("name: factory_cell")


def test_joint_trace_gives_columns_per_joint_for_an_episode(api, runs):
    body = api.get(f"/api/runs/{runs.good}/joints?episode=0&max_points=50").json()
    arm = body["robots"]["arm1"]
    assert body["episode"] == 0 and body["episodes"] == [0, 1]
    assert len(arm["joint_names"]) == 6 and len(arm["position"]) == 6 and len(arm["tcp_xyz"]) == 3
    assert 10 <= len(arm["t_s"]) <= 50 and all(len(column) == len(arm["t_s"]) for column in arm["position"])


def test_joint_trace_of_a_missing_episode_or_robot_is_404_naming_it(api, runs):
    missing = api.get(f"/api/runs/{runs.good}/joints?episode=9")
    assert missing.status_code == 404 and "episode 9" in missing.json()["detail"]
    robot = api.get(f"/api/runs/{runs.good}/joints?robot=arm7")
    assert robot.status_code == 404 and "'arm7'" in robot.json()["detail"]


def test_latency_histogram_counts_every_request(api, runs):
    samples = json.loads((runs.runs_dir / runs.good / "policy_latency_ms.json").read_text())
    body = api.get(f"/api/runs/{runs.good}/latency?bins=10").json()
    assert body["count"] == len(samples) == sum(body["counts"]) and len(body["edges"]) == 11
    assert body["p50"] <= body["p99"]


def test_latency_of_a_run_recorded_without_samples_gives_its_percentiles(api, runs):
    (runs.runs_dir / runs.good / "policy_latency_ms.json").unlink()
    body = api.get(f"/api/runs/{runs.good}/latency").json()
    assert body["count"] is None and body["p50"] is not None and body["counts"] == []


def test_sites_show_the_sites_flows_and_a_sound_audit(api, runs):
    body = api.get(f"/api/runs/{runs.sites}/sites").json()
    assert [s["jurisdiction"] for s in body["sites"]] == ["KR", "US", "JP"]
    flows = {(f["flow"], f["from"], f["to"]) for f in body["flows"]}
    assert ("observations", "jp-nagoya-cell", "us-west-models") in flows
    assert body["verdict"]["ok"] is True and body["verdict"]["closed"] is True and body["outcome"] == "run_end"


def test_sites_name_the_first_broken_line_of_a_tampered_audit(api, runs):
    audit = runs.runs_dir / runs.sites / "audit.jsonl"
    lines = audit.read_text().splitlines()
    lines[2] = lines[2].replace('"allow"', '"deny"', 1)
    audit.write_text("\n".join(lines) + "\n")
    verdict = api.get(f"/api/runs/{runs.sites}/sites").json()["verdict"]
    assert verdict["ok"] is False and verdict["broken_line"] == 3


def test_sites_of_a_run_without_sites_is_404_saying_why(api, runs):
    response = api.get(f"/api/runs/{runs.good}/sites")
    assert response.status_code == 404 and "one implicit site" in response.json()["detail"]


def test_logs_are_read_from_the_runs_logs_folder_only(api, runs):
    logs = runs.runs_dir / runs.good / "logs"
    logs.mkdir()
    (logs / "policy-arm1.log").write_text("hello from the policy\n")
    assert api.get(f"/api/runs/{runs.good}/logs/policy-arm1.log").text == "hello from the policy\n"
    missing = api.get(f"/api/runs/{runs.good}/logs/nope.log")
    assert missing.status_code == 404 and "policy-arm1.log" in missing.json()["detail"]
    for name in ("%2E%2E", "..%2Fmetrics.json", "%2E%2E%2F%2E%2E%2Fscenario.yaml"):
        response = api.get(f"/api/runs/{runs.good}/logs/{name}")
        assert response.status_code in (404, 422) and '"run_id"' not in response.text


# ------------------------------------------------------------------ compare, policies, launch files


def test_compare_gives_metrics_side_by_side_with_differences(api, runs):
    body = api.get(f"/api/compare?runs={runs.good}&runs={runs.bad}").json()
    success = next(m for m in body["metrics"] if m["key"] == "success_rate")
    assert success["values"] == [1.0, 0.0] and success["diff"] == [0.0, -1.0] and success["higher_is_better"]
    assert [e["success"] for e in body["episodes"][runs.good]] == [True, True]
    assert [e["success"] for e in body["episodes"][runs.bad]] == [False, False]
    latency = body["latency"]
    assert len(latency["edges"]) == 21
    assert all(len(latency["runs"][r]["counts"]) == 20 for r in (runs.good, runs.bad))


def test_compare_needs_two_runs_naming_the_field(api, runs):
    assert api.get("/api/compare").json()["field"] == "runs"
    one = api.get(f"/api/compare?runs={runs.good}")
    assert one.status_code == 422 and "two or more" in one.json()["detail"]


def test_compare_with_an_unknown_run_is_404(api, runs):
    response = api.get(f"/api/compare?runs={runs.good}&runs=ghost")
    assert response.status_code == 404 and "'ghost'" in response.json()["detail"]


def test_policies_list_each_policy_with_its_latency(api):
    (policy,) = api.get("/api/policies").json()["policies"]
    assert policy["policy"] == "expert-gp7" and policy["runs"] == 3
    assert policy["scenarios"] == ["factory_cell", "trilateral"] and policy["latency_ms"]["count"] > 0


def test_launch_files_are_those_of_the_launch_folder(api):
    names = {f["name"] for f in api.get("/api/launch-files").json()["files"]}
    assert {"factory_cell.yaml", "trilateral.yaml"} <= names


# ------------------------------------------------------------------ starting and stopping: refusals


def launch(api, body, token=TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return api.post("/api/runs", json=body, headers=headers)


def test_starting_a_run_without_the_token_is_401(api, runs):
    response = launch(api, {"launch": "factory_cell.yaml"}, token=None)
    assert response.status_code == 401 and "token" in response.json()["detail"]
    assert not (runs.runs_dir / ".launches").exists()


def test_starting_a_run_with_a_wrong_token_is_403(api):
    assert launch(api, {"launch": "factory_cell.yaml"}, token="guess").status_code == 403


def test_a_dashboard_without_a_token_starts_nothing(runs):
    with client_for(runs.runs_dir, token=None) as client:
        response = launch(client, {"launch": "factory_cell.yaml"}, token="anything")
    assert response.status_code == 403 and "TESTBED_DASHBOARD_TOKEN" in response.json()["detail"]


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"launch": "nope.yaml"}, "launch", "unknown launch file 'nope.yaml'"),
    ({"launch": "../launch/factory_cell.yaml"}, "launch", "not allowed"),
    ({"launch": "/etc/passwd"}, "launch", "not allowed"),
    ({"launch": "factory_cell.yaml", "overrides": ["episodes:=0"]}, "overrides", "episodes: expected greater than"),
    ({"launch": "factory_cell.yaml", "overrides": ["cell.conveyor.sped:=0.1"]}, "overrides", "cell.conveyor.sped"),
    ({"launch": "factory_cell.yaml", "overrides": ["episodes"]}, "overrides", "not key:=value"),
    ({"launch": "factory_cell.yaml", "overrides": ["--runs-dir=/tmp"]}, "overrides", "not key:=value"),
    ({"launch": "factory_cell.yaml", "overrides": ["policy.serve:=os:system"]}, "overrides", "policy.serve cannot"),
    ({"launch": "factory_cell.yaml", "overrides": ["policy:={builtin: evil.mod:Policy}"]}, "overrides",
     "policy.builtin cannot"),
    ({"launch": "factory_cell.yaml", "overrides": ["workload.orders:=/etc"]}, "overrides", "workload"),
    ({"launch": "factory_cell.yaml", "overrides": ["controller_service.serve:=true"]}, "overrides",
     "controller_service"),
])
def test_invalid_launch_requests_are_422_naming_the_field(api, runs, body, field, words):
    response = launch(api, body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field and words in response.json()["detail"]
    assert not any(p.suffix == ".log" for p in (runs.runs_dir / ".launches").glob("*"))


def test_a_launch_request_with_an_unknown_field_is_422_naming_it(api):
    response = launch(api, {"launch": "factory_cell.yaml", "seed": 3})
    assert response.status_code == 422 and response.json()["field"] == "seed"


def test_stopping_needs_the_token(api, runs):
    assert api.post(f"/api/runs/{runs.good}/stop").status_code == 401


def test_stopping_an_unknown_run_is_404_and_a_finished_one_409(api, runs):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert api.post("/api/runs/ghost/stop", headers=headers).status_code == 404
    finished = api.post(f"/api/runs/{runs.good}/stop", headers=headers)
    assert finished.status_code == 409 and "not running (status finished)" in finished.json()["detail"]


# ------------------------------------------------------------------ access from other hosts, schema, page


def test_reading_from_another_host_needs_the_token(runs):
    with client_for(runs.runs_dir, client=REMOTE) as client:
        refused = client.get("/api/runs")
        allowed = client.get("/api/runs", headers={"Authorization": f"Bearer {TOKEN}"})
        wrong = client.get("/api/runs", headers={"Authorization": "Bearer nope"})
    assert refused.status_code == 401 and "token" in refused.json()["detail"]
    assert allowed.status_code == 200 and wrong.status_code == 401


def test_binding_beyond_loopback_needs_a_token():
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("0.0.0.0", TOKEN)
    with pytest.raises(BridgeConfigError, match="beyond loopback needs a token; set TESTBED_DASHBOARD_TOKEN"):
        check_bind("0.0.0.0", None)


def test_openapi_schema_documents_every_endpoint(api):
    paths = set(api.get("/openapi.json").json()["paths"])
    assert paths == ENDPOINTS


def test_the_page_and_its_vendored_library_are_served(api):
    page = api.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "uPlot" in api.get("/static/vendor/uPlot.iife.min.js").text
    assert api.get("/static/vendor/LICENSE.uPlot").status_code == 200


# ------------------------------------------------------------------ the WebSocket's refusals


def first_message(client, path, hello):
    with client.websocket_connect(path) as ws:
        ws.send_text(json.dumps(hello))
        return ws.receive_json()


def test_live_feed_of_an_unknown_run_says_404(api):
    message = first_message(api, "/api/runs/ghost/live", {"token": None})
    assert message["type"] == "error" and message["code"] == 4404 and "'ghost'" in message["detail"]


def test_live_feed_refuses_a_run_id_outside_the_runs_folder(api):
    message = first_message(api, "/api/runs/..%2E/live", {"token": None})
    assert message["type"] == "error" and message["code"] in (4404, 4422)


def test_live_feed_of_a_finished_run_ends_at_once(api, runs):
    message = first_message(api, f"/api/runs/{runs.good}/live", {"token": None})
    assert message["type"] == "end" and "not live" in message["reason"]


def test_live_feed_from_another_host_needs_the_token(runs):
    with client_for(runs.runs_dir, client=REMOTE) as client:
        refused = first_message(client, f"/api/runs/{runs.good}/live", {"token": None})
        allowed = first_message(client, f"/api/runs/{runs.good}/live", {"token": TOKEN})
    assert refused["type"] == "error" and refused["code"] == 4401
    assert allowed["type"] == "end"
