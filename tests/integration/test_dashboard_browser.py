"""The dashboard page in a real headless Chromium (Debian's `chromium`, driven by playwright by path).

`playwright install` downloads browsers from elsewhere and cannot work here: `make chromium` installs
Debian's. Screenshots go to each test's temporary directory.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dashboard_server import REPO, TOKEN, RunningDashboard, running_dashboard
from playwright.sync_api import Browser, Page, sync_playwright

from testbed.eval.runner import run_scenario
from testbed.scenario import load

LOCAL_EXPERT = ("policy.serve:=null", "policy.builtin:=expert")
# as root Chromium needs --no-sandbox; without the background services it keeps dialling the closed network
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Debian's chromium is not installed: run `make chromium` (apt-get install chromium, as root)")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningDashboard, str, str]]:
    runs_dir = tmp_path_factory.mktemp("browser") / "runs"
    launch = REPO / "launch" / "factory_cell.yaml"
    good = run_scenario(load(launch, [*LOCAL_EXPERT, "episodes:=2"]), runs_dir=runs_dir).run_id
    bad = run_scenario(load(launch, [*LOCAL_EXPERT, "episodes:=2", "sim.max_episode_s:=3"]), runs_dir=runs_dir).run_id
    with running_dashboard(runs_dir) as running:
        yield running, good, bad


@pytest.fixture
def page(browser: Browser, tmp_path: Path) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    page.screenshot(path=str(tmp_path / "last.png"), full_page=True)
    context.close()
    assert errors == [], f"the page threw: {errors}"


def eventually(check: Callable[[], bool], timeout_s: float = 30.0, what: str = "") -> None:
    give_up = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < give_up, f"not within {timeout_s} s: {what}"
        time.sleep(0.2)


def run_dirs(dash: RunningDashboard) -> set[str]:
    return {p.name for p in dash.runs_dir.iterdir() if not p.name.startswith(".")}


def test_runs_table_lists_a_recorded_run(dash, page, tmp_path):
    running, good, bad = dash
    page.goto(running.url + "/")
    row = page.locator(f'#runs-table tr[data-run-id="{good}"]')
    row.wait_for(timeout=20000)
    text = row.inner_text()
    assert "factory_cell" in text and "expert-gp7" in text and "1.00" in text and "finished" in text
    page.locator('th[data-sort="success_rate"]').click()
    eventually(lambda: page.locator("#runs-table tbody tr").first.get_attribute("data-run-id") in (good, bad),
               what="sorted table")
    page.screenshot(path=str(tmp_path / "runs-table.png"), full_page=True)


def test_live_view_shows_a_changing_camera_image_and_moving_joint_plots(dash, page, tmp_path):
    running, _, _ = dash
    run_id = running.start_run(*LOCAL_EXPERT, "episodes:=1000")
    try:
        page.goto(f"{running.url}/#/run/{run_id}")
        camera = page.locator("#camera")
        eventually(lambda: (camera.get_attribute("src") or "").startswith("data:image/jpeg"), what="a camera frame")
        plot = page.locator(".joint-plot").first
        eventually(lambda: int(plot.get_attribute("data-samples") or 0) > 3, what="joint samples")
        first_src = camera.get_attribute("src")
        first_samples = int(plot.get_attribute("data-samples"))
        first_canvas = plot.locator("canvas").screenshot()
        page.screenshot(path=str(tmp_path / "live-1.png"), full_page=True)
        eventually(lambda: camera.get_attribute("src") != first_src, what="a new camera image")
        eventually(lambda: int(plot.get_attribute("data-samples")) >= first_samples + 10, what="more joint samples")
        eventually(lambda: plot.locator("canvas").screenshot() != first_canvas, what="the joint plot redrawn")
        assert page.locator('#controller-states tr[data-robot="arm1"]').inner_text().count("ACTIVE") == 1
        assert page.locator("#event-log tbody tr").count() > 0
        page.screenshot(path=str(tmp_path / "live-2.png"), full_page=True)
    finally:
        running.request("POST", f"/api/runs/{run_id}/stop", token=TOKEN)
        running.wait_until_ended(run_id)


def test_compare_view_shows_two_runs_success_rates(dash, page, tmp_path):
    running, good, bad = dash
    page.goto(f"{running.url}/#/compare/{good},{bad}")
    success = page.locator('#compare-table tr[data-metric="success_rate"]')
    success.wait_for(timeout=20000)
    assert success.locator(f'td[data-run-id="{good}"]').inner_text() == "1.00"
    assert success.locator(f'td[data-run-id="{bad}"]').inner_text() == "0.00 (-1.00)"
    assert page.locator("#compare-episodes .pass").count() == 2 and page.locator("#compare-episodes .fail").count() == 2
    assert page.locator("#compare-latency canvas").count() >= 1
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)


def test_starting_a_run_from_the_page_is_refused_without_the_token(dash, page, tmp_path):
    running, _, _ = dash
    before = run_dirs(running)
    page.goto(running.url + "/")
    page.locator('#launch-file option[value="factory_cell.yaml"]').wait_for(state="attached", timeout=20000)
    page.select_option("#launch-file", "factory_cell.yaml")
    page.fill("#launch-overrides", "episodes:=1\npolicy.serve:=null\npolicy.builtin:=expert")
    page.click("#launch-start")
    message = page.locator("#launch-message.error")
    message.wait_for(timeout=20000)
    assert message.inner_text().startswith("refused (401): starting and stopping runs needs the dashboard token")
    page.screenshot(path=str(tmp_path / "refused.png"), full_page=True)
    assert run_dirs(running) == before


def test_starting_a_run_from_the_page_works_with_the_token(dash, page, tmp_path):
    running, _, _ = dash
    before = run_dirs(running)
    page.goto(running.url + "/")
    page.fill("#token", TOKEN)
    page.locator('#launch-file option[value="factory_cell.yaml"]').wait_for(state="attached", timeout=20000)
    page.select_option("#launch-file", "factory_cell.yaml")
    page.fill("#launch-overrides", "episodes:=1000\npolicy.serve:=null\npolicy.builtin:=expert")
    page.click("#launch-start")
    page.wait_for_url("**/#/run/*", timeout=120000)
    run_id = page.url.split("#/run/")[1]
    try:
        assert run_dirs(running) - before == {run_id}
        page.locator("#camera[src]").wait_for(timeout=30000)
        page.screenshot(path=str(tmp_path / "started.png"), full_page=True)
        page.click("#run-stop")
        running.wait_until_ended(run_id)
        page.locator("#run-status").get_by_text("ended").wait_for(timeout=30000)
    finally:
        running.request("POST", f"/api/runs/{run_id}/stop", token=TOKEN)
    assert running.wait_until_ended(run_id)[-1]["kind"] == "run_aborted"
