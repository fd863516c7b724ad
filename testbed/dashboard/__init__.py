"""The dashboard: recorded runs, live runs, launches and comparisons in a browser.

Entry points: ``serve(...)`` (``testbed dashboard``) and ``serve_live(...)`` (``testbed launch --dashboard``,
whose hook follows the run's event stream); ``create_app(Dashboard(runs_dir))`` builds the ASGI app for tests
or another server. The page is static files in ``static/`` with vendored front-end libraries: no build step.
It reads runs only through their records and their event streams; it never reaches into a control loop.
"""

from testbed.dashboard.server import DashboardServer, serve, serve_live

__all__ = ["Dashboard", "DashboardServer", "create_app", "serve", "serve_live"]


def __getattr__(name: str) -> object:
    # the app needs fastapi (the dashboard extra): imported on first use, so `testbed --help` works without it
    if name in ("Dashboard", "create_app"):
        from testbed.dashboard import app

        return getattr(app, name)
    raise AttributeError(name)
