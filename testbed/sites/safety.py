"""Site safety profiles applied to the robots at the cell's site; a launch file may only tighten them.

The jurisdiction's profile sets the floor (``safety:`` in ``launch/sites/<j>.yaml``); the site entry in the
launch file (``sites.sites[i].safety``) may tighten it, and each robot's ``controller`` settings may tighten
it further. Where a robot leaves a setting out, the site's value applies. A setting looser than the site
is a ``ScenarioError`` naming both values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from testbed.errors import ScenarioError
from testbed.robots import load_robot
from testbed.scenario.schema import ControllerSettings, Scenario, SiteConfig
from testbed.sites.located import Locator
from testbed.sites.profile import Citation, CollaborativeLimits, Profiles, load_profiles


@dataclass(frozen=True)
class SiteSafety:
    """The safety settings in force at one site, after its launch-file tightening.

    Args:
        site: the site's name.
        jurisdiction: its jurisdiction.
        standard: the standard the profile follows.
        speed_scale_max: highest controller speed_scale.
        tcp_speed_limit_m_s: monitored TCP ceiling for every robot (inf: none).
        require_reduced_speed: every robot monitors ``reduced_speed_tcp_m_s``.
        reduced_speed_tcp_m_s: the reduced-speed TCP limit.
        collaborative: robots share space with people: ``limits`` apply.
        limits: collaborative limits of the profile (force limits are recorded, not enforced by the sim).
        manual_reset_after_protective_stop: a protective stop needs a deliberate reset before motion resumes.
        source: the profile file.
    """

    site: str
    jurisdiction: str
    standard: Citation
    speed_scale_max: float
    tcp_speed_limit_m_s: float
    require_reduced_speed: bool
    reduced_speed_tcp_m_s: float
    collaborative: bool
    limits: CollaborativeLimits | None
    manual_reset_after_protective_stop: bool
    source: str

    @property
    def tcp_ceiling_m_s(self) -> float:
        """The strictest TCP limit every robot at the site is held to (inf: none)."""
        ceiling = self.tcp_speed_limit_m_s
        if self.require_reduced_speed:
            ceiling = min(ceiling, self.reduced_speed_tcp_m_s)
        if self.collaborative and self.limits is not None:
            ceiling = min(ceiling, self.limits.max_tcp_speed_m_s)
        return ceiling


def site_safety(site: SiteConfig, profiles: Profiles, *, launch_file: str | Path | None = None,
                index: int | None = None) -> SiteSafety:
    """The safety in force at ``site``: its jurisdiction's profile, tightened by the launch file's entry.

    Args:
        site: the site.
        profiles: the profiles.
        launch_file: named, with the line, in error messages.
        index: the site's place in ``sites.sites`` (for messages).

    Raises:
        ScenarioError: the entry loosens the profile (names both values), or asks for collaborative
            operation in a jurisdiction whose profile has no collaborative limits.
    """
    profile = profiles.jurisdiction(site.jurisdiction).safety
    source = profiles.where.get("jurisdiction:" + site.jurisdiction, str(profiles.directory))
    given = site.safety
    at = Locator(launch_file)
    loc: tuple[str | int, ...] = ("sites", "sites", index if index is not None else site.name, "safety")
    field = f"sites.sites[{index if index is not None else site.name}].safety"

    def looser(name: str, mine: object, theirs: object) -> ScenarioError:
        return ScenarioError(f"{at((*loc, name))}{field}.{name}: {mine!r} is looser than the {site.jurisdiction} "
                             f"profile's {theirs!r} ({profile.standard.law}, {source}); a launch file may only "
                             "tighten it")

    speed_scale_max = profile.speed_scale_max
    if given.speed_scale_max is not None:
        if given.speed_scale_max > profile.speed_scale_max:
            raise looser("speed_scale_max", given.speed_scale_max, profile.speed_scale_max)
        speed_scale_max = given.speed_scale_max
    tcp_limit = profile.tcp_speed_limit_m_s if profile.tcp_speed_limit_m_s is not None else math.inf
    if given.tcp_speed_limit_m_s is not None:
        if given.tcp_speed_limit_m_s > tcp_limit:
            raise looser("tcp_speed_limit_m_s", given.tcp_speed_limit_m_s, tcp_limit)
        tcp_limit = given.tcp_speed_limit_m_s
    reduced = profile.reduced_speed_tcp_m_s
    if given.reduced_speed_tcp_m_s is not None:
        if given.reduced_speed_tcp_m_s > reduced:
            raise looser("reduced_speed_tcp_m_s", given.reduced_speed_tcp_m_s, reduced)
        reduced = given.reduced_speed_tcp_m_s
    require_reduced = profile.require_reduced_speed
    if given.require_reduced_speed is not None:
        if require_reduced and not given.require_reduced_speed:
            raise looser("require_reduced_speed", False, True)
        require_reduced = given.require_reduced_speed
    manual_reset = profile.manual_reset_after_protective_stop
    if given.manual_reset_after_protective_stop is not None:
        if manual_reset and not given.manual_reset_after_protective_stop:
            raise looser("manual_reset_after_protective_stop", False, True)
        manual_reset = given.manual_reset_after_protective_stop
    collaborative = bool(given.collaborative)
    if collaborative and profile.collaborative is None:
        raise ScenarioError(f"{at((*loc, 'collaborative'))}{field}.collaborative: the {site.jurisdiction} profile "
                            f"({source}) has no collaborative limits; add safety.collaborative to it first")
    return SiteSafety(site=site.name, jurisdiction=site.jurisdiction, standard=profile.standard,
                      speed_scale_max=speed_scale_max, tcp_speed_limit_m_s=tcp_limit,
                      require_reduced_speed=require_reduced, reduced_speed_tcp_m_s=reduced,
                      collaborative=collaborative, limits=profile.collaborative,
                      manual_reset_after_protective_stop=manual_reset, source=source)


def cell_safety(scenario: Scenario, profiles: Profiles | None = None, *,
                launch_file: str | Path | None = None) -> SiteSafety | None:
    """The safety in force at the cell's site, or None for a scenario without ``sites:``."""
    if scenario.sites is None:
        return None
    profiles = profiles or load_profiles(scenario.sites.profiles)
    index, site = next((i, s) for i, s in enumerate(scenario.sites.sites) if s.name == scenario.sites.placement.cell)
    return site_safety(site, profiles, launch_file=launch_file, index=index)


def effective_controller_settings(
    scenario: Scenario,
    profiles: Profiles | None = None,
    *,
    launch_file: str | Path | None = None,
) -> tuple[ControllerSettings, ...]:
    """Each robot's controller settings with the cell site's safety profile applied.

    A setting the launch file leaves out takes the site's value; one it gives must be at least as tight.
    Without ``sites:`` the settings are returned unchanged.

    Returns:
        one ``ControllerSettings`` per robot of ``scenario.cell.robots``, in order. When the site holds a
        robot to a TCP ceiling, ``tcp_speed_limit_m_s`` carries it (and ``reduced_speed`` is set when
        reduced speed is required), so the runner's existing monitoring enforces the site's number.

    Raises:
        ScenarioError: a robot's setting is looser than the site's (names both values and the profile).
    """
    settings = tuple(robot.controller for robot in scenario.cell.robots)
    safety = cell_safety(scenario, profiles, launch_file=launch_file)
    if safety is None:
        return settings
    at = Locator(launch_file)
    out = []
    for i, controller in enumerate(settings):
        given = controller.model_fields_set

        def looser(name: str, mine: object, theirs: object, what: str, *, robot: int = i) -> ScenarioError:
            loc = ("cell", "robots", robot, "controller", name)
            return ScenarioError(
                f"{at(loc)}cell.robots[{robot}].controller.{name}: {mine!r} is looser than site {safety.site!r}'s "
                f"{what} {theirs!r} ({safety.standard.law}, {safety.source}); a launch file may only tighten it"
            )

        speed_scale = controller.speed_scale
        if "speed_scale" in given:
            if speed_scale > safety.speed_scale_max:
                raise looser("speed_scale", speed_scale, safety.speed_scale_max, "speed_scale_max")
        else:
            speed_scale = min(speed_scale, safety.speed_scale_max)
        reduced = controller.reduced_speed
        if safety.require_reduced_speed and "reduced_speed" in given and not reduced:
            raise looser("reduced_speed", False, True, "require_reduced_speed")
        reduced = reduced or safety.require_reduced_speed
        ceiling = safety.tcp_ceiling_m_s
        limit = controller.tcp_speed_limit_m_s
        if limit is not None and limit > ceiling:
            raise looser("tcp_speed_limit_m_s", limit, ceiling, "TCP ceiling")
        bound = ceiling
        if reduced:
            # the runner monitors an explicit limit before the model's reduced one: fold both into the limit
            bound = min(bound, load_robot(scenario.cell.robots[i].model).reduced_tcp_speed_m_s)
        limit = min(limit if limit is not None else math.inf, bound)
        if math.isinf(limit):
            limit = None
        out.append(controller.model_copy(update={"speed_scale": speed_scale, "reduced_speed": reduced,
                                                 "tcp_speed_limit_m_s": limit}))
    return tuple(out)


def apply_site_safety(scenario: Scenario, profiles: Profiles | None = None, *,
                      launch_file: str | Path | None = None) -> Scenario:
    """``scenario`` with every robot's controller settings replaced by ``effective_controller_settings``."""
    if scenario.sites is None:
        return scenario
    settings = effective_controller_settings(scenario, profiles, launch_file=launch_file)
    robots = tuple(robot.model_copy(update={"controller": controller})
                   for robot, controller in zip(scenario.cell.robots, settings, strict=True))
    return scenario.model_copy(update={"cell": scenario.cell.model_copy(update={"robots": robots})})
