"""A run's sites: the checked flow plan, the link between the policy and the cell, the audit log and its meter.

Without ``sites:`` in the launch file everything here is inert: one implicit local site, no link, no audit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from testbed.scenario.schema import Scenario
from testbed.sites import FlowMeter, FlowPlan, apply_site_safety, cell_safety, check_flows, open_run_audit, plan_flows
from testbed.sites.audit import AuditLog
from testbed.sites.links import LinkSpec, SimulatedLink
from testbed.sites.transform import MessageFilter

# controller events that are safety-limit interventions, recorded in the audit log as they happen
# (tcp_speed_limited: the loop started holding a robot to its TCP speed limit)
SAFETY_EVENTS = frozenset({"protective_stop", "emergency_stop", "limit_clamped", "command_rejected",
                           "tcp_speed_limited"})
LINK_SEED_TAG = 0x5173  # keeps link delays' random stream apart from the workload's


class RunSites:
    """The sites side of one run.

    Args:
        scenario: the scenario with the cell site's safety applied (``effective_scenario``).
        launch_file: named in error messages.
    """

    def __init__(self, scenario: Scenario, launch_file: Path) -> None:
        self.scenario = scenario
        self.launch_file = launch_file
        # planned once up front: bad sites settings fail before the cell is built; the link is known
        self.plan: FlowPlan = plan_flows(scenario, (), launch_file=launch_file)
        self.audit: AuditLog | None = None
        self.meter: FlowMeter | None = None
        self.observations: MessageFilter | None = None

    @property
    def local(self) -> bool:
        """True for a run at one implicit local site."""
        return self.plan.local

    def policy_link(self) -> LinkSpec | None:
        """The link between the policy's site and the cell's site; None when they are one site (or no sites)."""
        cfg = self.scenario.sites
        if cfg is None:
            return None
        policy_site = cfg.placement.policy or cfg.placement.cell
        if policy_site == cfg.placement.cell:
            return None
        pair = (min(policy_site, cfg.placement.cell), max(policy_site, cfg.placement.cell))
        return LinkSpec.of(self.plan.links[pair])

    def simulated_link(self, robot: int) -> Callable[[int], SimulatedLink] | None:
        """Per episode, the policy link in simulated time, drawn from (seed, episode, robot): the same delays
        whichever worker runs the episode."""
        link = self.policy_link()
        if link is None:
            return None
        seed = self.scenario.seed
        return lambda episode: SimulatedLink(link, np.random.default_rng((seed, episode, robot, LINK_SEED_TAG)))

    def check(self, observation_keys: Iterable[str]) -> None:
        """Decide every flow with the observations the policies really read; refuse a denied one.

        Raises:
            ComplianceDenied: one line naming the field, the rule and its citation.
        """
        self.plan = check_flows(self.scenario, sorted(set(observation_keys)), launch_file=self.launch_file)
        self.observations = self.plan.outbound("observations")

    def start_audit(self, run_dir: Path, run_id: str, stack: ExitStack) -> None:
        """Open ``audit.jsonl`` with the launch's decisions; it is closed (with the run's outcome) by ``stack``."""
        if self.local:
            return
        self.audit = open_run_audit(run_dir, self.plan, run_id=run_id, scenario=self.scenario.name,
                                    safety=cell_safety(self.scenario, self.plan.profiles,
                                                       launch_file=self.launch_file))
        self.meter = FlowMeter(self.plan)
        stack.push(self._closing_audit)

    def outbound_observations(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """An observation as it may leave the cell's site, counted on the observations flow."""
        if self.observations is not None:
            obs = self.observations.apply(obs)
        if self.meter is not None and self.meter.tracks("observations"):
            self.meter.add("observations", sum(int(v.nbytes) for v in obs.values()))
        return obs

    def inbound_actions(self, nbytes: int) -> None:
        """Count an action chunk that crossed back to the cell."""
        if self.meter is not None and self.meter.tracks("actions"):
            self.meter.add("actions", nbytes)

    def workload_sent(self, arrivals: int) -> None:
        """Count the part arrivals of one episode sent from the data site to the cell."""
        if self.meter is not None and self.meter.tracks("workload"):
            self.meter.add("workload", 0, arrivals)

    def safety_intervention(self, t_s: float, episode: int, robot: str, kind: str, detail: dict[str, Any]) -> None:
        """Record a controller's safety-limit intervention in the audit log."""
        if self.audit is not None and kind in SAFETY_EVENTS:
            self.audit.append("safety", t_s=t_s, episode=episode, robot=robot, event=kind,
                              **{k: _plain(v) for k, v in detail.items()})

    def end_interval(self, t_s: float) -> None:
        """Write the traffic of the interval that ends at ``t_s`` (run time, simulated seconds)."""
        if self.audit is not None and self.meter is not None:
            self.meter.flush_to(self.audit, t_s)

    def _closing_audit(self, exc_type: type[BaseException] | None, exc: BaseException | None, _tb: object) -> bool:
        assert self.audit is not None
        if exc_type is None:
            self.audit.close(outcome="run_end")
        else:
            self.audit.close(outcome="run_aborted", reason=f"{exc_type.__name__}: {exc}")
        return False


def effective_scenario(scenario: Scenario, launch_file: Path) -> Scenario:
    """The scenario with the cell site's safety profile applied (unchanged without ``sites:``).

    Raises:
        ScenarioError: the launch file loosens the site's safety (both values named).
    """
    return apply_site_safety(scenario, launch_file=launch_file)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
