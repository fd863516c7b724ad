"""Running scenarios: the episode loop, its drivers, the event stream and the metrics.

Entry point: ``run_scenario(testbed.scenario.load(path, overrides))``.
"""

from testbed.eval.events import EventStream, Subscription
from testbed.eval.runner import RunResult, run_scenario

__all__ = ["EventStream", "RunResult", "Subscription", "run_scenario"]
