"""testbed/FactoryPick-v0: the real cell behind gymnasium's API, driven through the control loop."""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium
import numpy as np
import pybullet as p
import pytest
import yaml
from gymnasium.utils.env_checker import check_env

import testbed.gym
from testbed.errors import FeatureUnavailable, ScenarioError, SpecMismatch
from testbed.gym import ENV_ID, FactoryPickEnv
from testbed.policies.expert import ExpertPolicy
from testbed.scenario import load
from testbed.scenario.arrivals import ArrivalPlan
from testbed.scenario.randomize import draw_episode

ROOT = Path(testbed.__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
# check_env's advice we do not follow, on purpose: actions are joint targets in the robot's own units
# (rad, m) within its limits, and part positions in the environment state are unbounded
ACCEPTED_WARNINGS = ("we recommend using a symmetric and normalized space",
                     "observation space minimum value is -infinity", "observation space maximum value is infinity")
RANDOMIZE = {"part_lateral_m": [-0.02, 0.02], "part_yaw_deg": [-40.0, 40.0], "part_mass_scale": [0.8, 1.2],
             "conveyor_speed_scale": [0.8, 1.2], "camera_eye_jitter_m": 0.03, "part_mix_concentration": 0.5}


def randomized_launch(tmp_path: Path, **extra) -> Path:
    data = yaml.safe_load((LAUNCH / "factory_cell.yaml").read_text())
    data["randomize"] = RANDOMIZE
    data.update(extra)
    path = tmp_path / "randomized.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def hold_action(env: FactoryPickEnv) -> np.ndarray:
    return np.append(env.model.home, 0.0).astype(np.float32)


def expert_rollout(env: FactoryPickEnv, seed: int, episode: int = 0):
    """Run the built-in expert through the env; returns (observations, rewards, last info, terminated)."""
    expert = ExpertPolicy(env.model.name, control_hz=env.control_hz)
    try:
        obs, info = env.reset(seed=seed, options={"episode": episode})
        expert.reset(episode)
        observations, rewards = [obs], []
        while True:
            chunk = expert.act(obs)
            # row 1 is the target for the end of this step, the row a run applies one policy step later
            obs, reward, terminated, truncated, info = env.step(chunk[1])
            observations.append(obs)
            rewards.append(reward)
            if terminated or truncated:
                return observations, rewards, info, terminated
    finally:
        expert.close()


@pytest.fixture(scope="module")
def expert_run():
    env = gymnasium.make(ENV_ID, obs_mode="images").unwrapped
    try:
        yield env, expert_rollout(env, seed=3)
    finally:
        env.close()


@pytest.mark.parametrize("kwargs", [{"render_mode": "rgb_array"}, {"obs_mode": "state"},
                                    {"render_mode": "rgb_array", "launch": "randomized"}],
                         ids=["images", "state", "randomized"])
def test_check_env_passes(kwargs, tmp_path):
    if kwargs.get("launch") == "randomized":
        kwargs = {**kwargs, "launch": randomized_launch(tmp_path)}
    env = gymnasium.make(ENV_ID, **kwargs)
    try:
        assert ("observation.images.overhead" in env.observation_space.spaces) == ("render_mode" in kwargs)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env.unwrapped)
        unexpected = [str(w.message) for w in caught if not any(a in str(w.message) for a in ACCEPTED_WARNINGS)]
        assert unexpected == []
    finally:
        env.close()


def test_expert_through_the_env_places_every_part_for_positive_reward(expert_run):
    _, (_, rewards, info, terminated) = expert_run
    tally = info["tally"]
    assert terminated and tally["end_reason"] == "all parts handled"
    assert tally["parts"] == 3 and tally["placed"] == 3 and info["is_success"]
    assert sum(rewards) == pytest.approx(3.0)  # +1 a part, no drops, collisions or stops
    assert tally["limit_clamped"] == 0 and tally["safety_stops"] == 0


def test_one_step_is_one_policy_step(expert_run):
    env, (observations, _, info, _) = expert_run
    assert env.steps_per_action == 12 and env.control_hz == pytest.approx(20.0)
    steps = len(observations) - 1
    # every step but the last runs 12 physics steps; the last one ends at the physics step the work is done
    assert (steps - 1) * 12 / 240.0 < info["t_s"] <= steps * 12 / 240.0 + 1e-9


def test_observations_lie_in_their_spaces_with_the_contract_dtypes(expert_run):
    env, (observations, _, _, _) = expert_run
    space = env.observation_space
    for obs in observations:
        assert obs in space
        assert obs["observation.state"].dtype == np.float32 and obs["observation.state"].shape == (7,)
        assert obs["observation.environment_state"].dtype == np.float32
        assert obs["observation.images.overhead"].dtype == np.uint8
        assert obs["observation.images.overhead"].shape == (96, 96, 3)
    holding = [o["observation.environment_state"][7] for o in observations]
    suction = [o["observation.state"][6] for o in observations]
    assert max(holding) == 1.0 and max(suction) == 1.0  # the rollout did pick parts


def test_same_seed_gives_identical_observations_and_rewards():
    trajectories = []
    for _ in range(2):
        env = gymnasium.make(ENV_ID, obs_mode="images").unwrapped
        try:
            home = hold_action(env)
            steps = [env.reset(seed=5)[0]]
            local = np.random.default_rng(11)
            for _ in range(40):
                action = home + np.append(local.uniform(-0.3, 0.3, 6), local.uniform() > 0.5).astype(np.float32)
                obs, reward, terminated, truncated, info = env.step(action)
                steps.append((obs, reward, terminated, truncated, info))
                if terminated or truncated:
                    break
            trajectories.append(steps)
        finally:
            env.close()
    first, second = trajectories
    assert len(first) == len(second) > 20
    assert gymnasium.utils.env_checker.data_equivalence(first, second, exact=True)


def test_reset_with_the_same_seed_repeats_the_episode_and_the_next_reset_moves_on():
    env = gymnasium.make(ENV_ID, obs_mode="state").unwrapped
    try:
        hold = hold_action(env)

        def until_part_ready():
            for _ in range(200):
                obs, *_ = env.step(hold)
                if obs["observation.environment_state"][6] == 1.0:
                    return obs
            raise AssertionError("no part became ready")

        env.reset(seed=9)
        first = until_part_ready()
        assert (env.run_seed, env.episode_index) == (9, 0)
        env.reset()
        assert (env.run_seed, env.episode_index) == (9, 1)
        env.reset(seed=9)
        again = until_part_ready()
        np.testing.assert_array_equal(first["observation.environment_state"], again["observation.environment_state"])
        env.reset(options={"episode": 4})
        assert env.episode_index == 4
        with pytest.raises(ScenarioError, match="unknown key"):
            env.reset(options={"episodes": 1})
    finally:
        env.close()


def test_action_outside_the_joint_limits_is_clamped_by_the_controller():
    env = gymnasium.make(ENV_ID, obs_mode="state").unwrapped
    try:
        env.reset(seed=0)
        action = hold_action(env)
        action[0] = env.model.upper[0] + 1.5  # far outside the base joint's range
        assert action not in env.action_space
        limit_events = 0
        for _ in range(60):
            obs, _, terminated, _, info = env.step(action)
            limit_events += sum(e["kind"] == "limit_clamped" for e in info["events"])
            assert not terminated
        assert limit_events >= 1 and info["tally"]["limit_clamped"] == limit_events
        # the controller brought the joint to its limit and no further
        assert obs["observation.state"][0] == pytest.approx(env.model.upper[0], abs=0.02)
        assert env.control.setpoint[0, 0] <= env.model.upper[0]
    finally:
        env.close()


@pytest.mark.parametrize(("action", "match"), [
    (np.zeros(6), r"expected shape \(7,\)"),
    (np.array([0, np.nan, 0, 0, 0, 0, np.inf]), "NaN or inf in joint_2, suction"),
    (np.array(["a"] * 7), "expected numbers"),
])
def test_malformed_actions_are_refused(action, match):
    env = gymnasium.make(ENV_ID, obs_mode="state").unwrapped
    try:
        env.reset(seed=0)
        with pytest.raises(SpecMismatch, match=match):
            env.step(action)
    finally:
        env.close()


def test_render_returns_the_camera_image():
    env = gymnasium.make(ENV_ID, render_mode="rgb_array").unwrapped
    try:
        obs, _ = env.reset(seed=0)
        frame = env.render()
        assert frame.dtype == np.uint8 and frame.shape == (96, 96, 3)
        np.testing.assert_array_equal(frame, obs["observation.images.overhead"])
        assert frame.std() > 0  # a picture of the cell, not a blank
        assert env.metadata["render_fps"] == pytest.approx(20.0)
    finally:
        env.close()


def test_render_without_cameras_in_the_launch_file_uses_the_default_camera():
    env = gymnasium.make(ENV_ID, launch=LAUNCH / "factory_orders.yaml", render_mode="rgb_array").unwrapped
    try:
        obs, _ = env.reset(seed=0)
        assert set(obs) == {"observation.state", "observation.environment_state"}  # state by default there
        assert env.render().shape == (96, 96, 3)
    finally:
        env.close()


def test_truncated_at_max_episode_s():
    env = gymnasium.make(ENV_ID, overrides=["sim.max_episode_s:=1.0"], obs_mode="state").unwrapped
    try:
        env.reset(seed=0)
        results = [env.step(hold_action(env)) for _ in range(20)]
        assert [r[3] for r in results] == [False] * 19 + [True]
        assert results[-1][4]["tally"]["end_reason"] == "max_episode_s reached"
        with pytest.raises(ScenarioError, match="call reset"):
            env.step(hold_action(env))
    finally:
        env.close()


def test_close_disconnects_pybullet():
    env = gymnasium.make(ENV_ID, obs_mode="state")
    client = env.unwrapped.cell.client
    assert p.isConnected(client)
    env.close()
    assert not p.isConnected(client)
    env.close()


@pytest.mark.parametrize(("launch", "match"), [("two_robots.yaml", "drives one robot"),
                                               ("scara_job.yaml", "remove its job"),
                                               ("trilateral.yaml", "sites")])
def test_launch_files_the_env_cannot_drive_are_refused(launch, match):
    with pytest.raises(ScenarioError, match=match):
        FactoryPickEnv(LAUNCH / launch)


def test_bad_modes_are_refused():
    with pytest.raises(FeatureUnavailable, match="render_mode 'human'"):
        FactoryPickEnv(render_mode="human")
    with pytest.raises(FeatureUnavailable, match="obs_mode 'pixels'"):
        FactoryPickEnv(obs_mode="pixels")
    with pytest.raises(ScenarioError, match="obs_mode 'images' needs cameras"):
        FactoryPickEnv(LAUNCH / "factory_orders.yaml", obs_mode="images")


# ---- randomization and workloads: the same episodes as `testbed launch` ----------------------------------


SHIPPED_RANDOMIZED = LAUNCH / "factory_cell_randomized.yaml"


@pytest.mark.parametrize("launch", [
    "randomize block",
    pytest.param("shipped", marks=pytest.mark.skipif(not SHIPPED_RANDOMIZED.exists(),
                                                     reason="launch/factory_cell_randomized.yaml is not there yet")),
])
def test_randomization_moves_the_part_between_seeds(launch, tmp_path):
    path = randomized_launch(tmp_path) if launch == "randomize block" else SHIPPED_RANDOMIZED
    env = gymnasium.make(ENV_ID, launch=path, obs_mode="state").unwrapped
    try:
        poses = []
        for seed in (0, 1):
            obs, info = env.reset(seed=seed)
            assert info["randomize"] == draw_episode(env.scenario.randomize, seed, 0).summary()
            for _ in range(300):
                obs, *_ = env.step(hold_action(env))
                state = obs["observation.environment_state"]
                if state[6] == 1.0:
                    poses.append(state[[0, 3]].copy())  # part_x (across the belt), part_yaw
                    break
        assert len(poses) == 2
        assert np.max(np.abs(poses[0] - poses[1])) > 1e-3
    finally:
        env.close()


@pytest.mark.parametrize("launch", ["factory_cell.yaml", "factory_orders.yaml", "scara_job.yaml", "randomized"])
def test_the_part_pool_bound_covers_every_episode(launch, tmp_path):
    path = randomized_launch(tmp_path, episodes=6) if launch == "randomized" else LAUNCH / launch
    scenario = load(path).scenario
    plan = ArrivalPlan(scenario)
    most = plan.most_per_type()
    for episode in (plan.arrivals(scenario.seed, k) for k in range(scenario.episodes)):
        for kind in {a.part_type for a in episode}:
            assert sum(a.part_type == kind for a in episode) <= most[kind]


def test_episode_gets_the_draw_testbed_launch_gives_it(tmp_path):
    """The run's episode 2 and the env's episode 2 of the same seed: same randomization, same arrivals."""
    from testbed.eval.runner import run_scenario

    path = randomized_launch(tmp_path, episodes=3, seed=7, sim={"physics_hz": 240, "max_episode_s": 0.5},
                             policy={"builtin": "expert"})
    result = run_scenario(load(path), runs_dir=tmp_path / "runs", episodes=[2])
    starts = [json.loads(line) for line in (result.run_dir / "events.jsonl").read_text().splitlines()]
    run_draw = next(e for e in starts if e["kind"] == "episode_start")["randomize"]
    env = gymnasium.make(ENV_ID, launch=path, obs_mode="state").unwrapped
    try:
        _, info = env.reset(seed=7, options={"episode": 2})
        assert info["randomize"] == run_draw
        assert env.cell.conveyor_speed != pytest.approx(env.scenario.cell.conveyor.speed)
    finally:
        env.close()


# ---- the package ------------------------------------------------------------------------------------------


def test_import_does_not_load_the_runner_or_the_network():
    code = ("import sys, testbed.gym; print(sorted(m for m in sys.modules "
            "if m.startswith(('testbed.eval', 'testbed.bridge', 'grpc'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_without_gymnasium_the_error_names_the_extra():
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'gymnasium' or name.startswith('gymnasium.'):\n"
            "            raise ImportError('No module named ' + repr(name))\n"
            "sys.meta_path.insert(0, Block())\n"
            "try:\n"
            "    import testbed.gym\n"
            "except Exception as exc:\n"
            "    print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert "FeatureUnavailable" in out.stdout and "pip install 'testbed[gym]'" in out.stdout


def test_make_without_importing_the_package_first():
    code = ("import gymnasium; env = gymnasium.make('testbed.gym:testbed/FactoryPick-v0', obs_mode='state'); "
            "print(env.reset(seed=0)[0]['observation.state'].shape); env.close()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "(7,)"
