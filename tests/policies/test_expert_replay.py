"""The expert's chunks depend on its observations alone: replayed into fresh or already used experts, a real run's
observations give that run's chunks bit for bit; a plan's rows repeat from chunk to chunk; the intercept search
picks the catch point a full check of every candidate picks."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from testbed.eval.runner import run_scenario
from testbed.policies.expert import CATCH_SETTLE_S, ExpertPolicy, Phase, Segment
from testbed.policies.observations import ENV_STATE_DIM
from testbed.scenario import load

RANDOMIZED = Path(__file__).resolve().parents[2] / "launch" / "factory_cell_randomized.yaml"


@dataclass
class Act:
    episode: int
    obs: dict[str, np.ndarray]
    chunk: np.ndarray
    segment: Segment  # the plan the chunk came from
    phase: Phase


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> list[Act]:
    """Every observation the in-process expert got and every chunk it returned, in 3 episodes of the randomized cell
    (seed 0: the first two parts of each of episodes 0 and 1 are caught on the move, episode 2's at the stopper)."""
    acts: list[Act] = []
    episode = [-1]
    act, reset = ExpertPolicy.act, ExpertPolicy.reset

    def recording_act(self: ExpertPolicy, obs: dict[str, np.ndarray]) -> np.ndarray:
        given = {k: np.array(v, copy=True) for k, v in obs.items()}
        chunk = act(self, obs)
        acts.append(Act(episode[0], given, chunk.copy(), self._segment, self._phase))
        return chunk

    def recording_reset(self: ExpertPolicy, index: int) -> None:
        episode[0] = index
        reset(self, index)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ExpertPolicy, "act", recording_act)
        mp.setattr(ExpertPolicy, "reset", recording_reset)
        loaded = load(RANDOMIZED, ["episodes:=3", "seed:=0", "policy.serve:=null", "policy.builtin:=expert"])
        metrics = run_scenario(loaded, runs_dir=tmp_path_factory.mktemp("runs")).metrics
    assert metrics["success_rate"] == 1.0
    return acts


def _replay(expert: ExpertPolicy, acts: list[Act]) -> list[np.ndarray]:
    chunks, episode = [], None
    for a in acts:
        if a.episode != episode:
            episode = a.episode
            expert.reset(episode)
        chunks.append(expert.act({k: v.copy() for k, v in a.obs.items()}))
    return chunks


def test_a_runs_observations_give_its_chunks_in_fresh_and_used_experts(recorded_run: list[Act]) -> None:
    phases = {a.phase for a in recorded_run}
    assert {Phase.INTERCEPT, Phase.CATCH, Phase.DESCEND, Phase.TRANSFER} <= phases  # both ways of picking ran
    fresh = ExpertPolicy("gp7")
    used = ExpertPolicy("gp7")
    try:
        # ``used`` first goes through the episodes backwards: it meets each with the solutions of the others kept
        _replay(used, [a for ep in (2, 1, 0) for a in recorded_run if a.episode == ep])
        for expert in (fresh, used):
            chunks = _replay(expert, recorded_run)
            assert len(chunks) == len(recorded_run)
            for k, (chunk, a) in enumerate(zip(chunks, recorded_run, strict=True)):
                assert chunk.dtype == np.float32 and chunk.shape == a.chunk.shape
                assert np.array_equal(chunk, a.chunk), f"act {k} (episode {a.episode}, {a.phase.value})"
    finally:
        fresh.close()
        used.close()


def test_rows_repeat_from_chunk_to_chunk_while_the_plan_holds(recorded_run: list[Act]) -> None:
    held = replanned = 0
    for before, after in itertools.pairwise(recorded_run):
        if before.episode != after.episode:
            continue
        if after.segment is before.segment:
            # one policy step later: row k of the new chunk is the step of row k + 1 of the previous one
            assert np.array_equal(after.chunk[:-1], before.chunk[1:])
            held += 1
        else:
            replanned += 1
    assert held > 10 * replanned > 0


def test_intercept_picks_the_catch_point_a_full_check_of_every_candidate_picks() -> None:
    """``_intercept`` skips inverse kinematics for candidates that cannot be in time; checking each candidate in
    full (both plans, reach, time) must pick the same one, with the same plan."""
    rng = np.random.default_rng(3)
    searched, full = ExpertPolicy("gp7"), ExpertPolicy("gp7")
    picked = let_go = 0
    try:
        for trial in range(12):
            q = searched.model.home + rng.uniform(-0.3, 0.3, searched.n)
            obs = {"observation.state": np.array([*q, 0.0], dtype=np.float32),
                   "observation.environment_state": np.zeros(ENV_STATE_DIM, dtype=np.float32)}
            for expert in (searched, full):
                expert.reset(trial)
                expert.act(obs)  # holds where the arm is: the plans start there
            part_xy = np.array([rng.uniform(0.3, 0.6) if trial % 4 else 1.6, rng.uniform(-0.6, -0.2)])
            velocity = np.array([rng.uniform(-0.01, 0.01), rng.uniform(0.1, 0.6)])
            top_z = rng.uniform(0.1, 0.14)
            found = searched._intercept(part_xy, velocity, top_z)
            expected = _first_catch_checked_in_full(full, part_xy, velocity, top_z)
            assert found == (expected is not None)
            if expected is None:
                let_go += 1
                continue
            picked += 1
            path, dash_s, ahead_s = expected
            assert searched._phase is Phase.INTERCEPT and searched._segment is not None
            assert np.array_equal(searched._segment.waypoints, path)
            assert searched._segment.duration_steps == dash_s * searched.control_hz
            assert searched._catch is not None and np.array_equal(searched._catch.xy, part_xy + velocity * ahead_s)
        assert picked >= 4 and let_go >= 3
    finally:
        searched.close()
        full.close()


def _first_catch_checked_in_full(expert: ExpertPolicy, part_xy: np.ndarray, velocity: np.ndarray,
                                 top_z: float) -> tuple[np.ndarray, float, float] | None:
    """The catch points of ``ExpertPolicy._intercept`` in order, each planned and checked in full."""
    speed = float(np.linalg.norm(velocity))
    lead_s = 0.06 / speed  # CATCH_CLEARANCE_M
    for ahead_s in np.arange(0.2, 4.0, 0.1):
        goal = part_xy + velocity * ahead_s
        low = np.array([*goal, top_z + 0.005])  # CATCH_HEIGHT_M
        path, dash_s = expert._plan([(*goal, top_z + 0.05)])  # CATCH_ABOVE_M
        down, down_s = expert._plan([low], speed=0.3, start=path[-1])  # CATCH_DESCEND_SPEED
        reached = float(np.linalg.norm(expert._fk(down[-1]) - low)) <= 0.004
        if reached and dash_s + down_s + CATCH_SETTLE_S <= ahead_s - lead_s:
            return path, dash_s, float(ahead_s)
    return None
