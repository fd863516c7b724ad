"""Take the README's dashboard screenshots: docs/dashboard-live.png and docs/dashboard-compare.png.

Records three runs of the default cell, serves the dashboard on them, starts a fourth run from the API
(in real time, so the joint plots are smooth) and photographs its live view and a comparison of the three,
in Debian's headless chromium (`make chromium`). Run: .venv/bin/python scripts/dashboard_screenshots.py
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

from testbed.dashboard import Dashboard, DashboardServer, create_app
from testbed.eval.runner import run_scenario
from testbed.scenario import load

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
LAUNCH = REPO / "launch" / "factory_cell.yaml"
TOKEN = "screenshots"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VARIANTS = (  # the comparison: the default, the cell at reduced speed, and episodes cut short
    ("episodes:=6",),
    ("episodes:=6", "cell.robots[0].controller.reduced_speed:=true"),
    ("episodes:=6", "sim.max_episode_s:=19.3"),
)


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=180) as response:
        return json.loads(response.read())


def main() -> None:
    DOCS.mkdir(exist_ok=True)
    runs_dir = Path(tempfile.mkdtemp(prefix="dashboard-screenshots-")) / "runs"
    try:
        ids = [run_scenario(load(LAUNCH, list(v)), runs_dir=runs_dir).run_id for v in VARIANTS]
        server = DashboardServer(create_app(Dashboard(runs_dir, REPO / "launch", TOKEN)), "127.0.0.1", 0)
        server.start()
        url = f"http://127.0.0.1:{server.port}"
        overrides = ["episodes:=20", "sim.realtime:=true", "cell.cameras[0].width:=240", "cell.cameras[0].height:=240"]
        live = post(url + "/api/runs", {"launch": "factory_cell.yaml", "overrides": overrides})["run_id"]
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"{url}/#/run/{live}")
                page.locator("#camera[src]").wait_for(timeout=60000)
                time.sleep(25)  # an episode's worth of joint history, events and latencies
                page.screenshot(path=str(DOCS / "dashboard-live.png"), full_page=True)
                page.goto(f"{url}/#/compare/{','.join(ids)}")
                page.locator("#compare-latency canvas").first.wait_for(timeout=20000)
                time.sleep(1)
                page.screenshot(path=str(DOCS / "dashboard-compare.png"), full_page=True)
                browser.close()
        finally:
            post(f"{url}/api/runs/{live}/stop", {})
            time.sleep(3)
            server.stop()
    finally:
        shutil.rmtree(runs_dir.parent, ignore_errors=True)
    print(f"wrote {DOCS / 'dashboard-live.png'} and {DOCS / 'dashboard-compare.png'}")


if __name__ == "__main__":
    main()
