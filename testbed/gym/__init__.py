"""The cell as a gymnasium environment: ``gymnasium.make("testbed/FactoryPick-v0")`` after ``import testbed.gym``.

Without importing it first: ``gymnasium.make("testbed.gym:testbed/FactoryPick-v0")``. Needs the ``gym``
extra (``pip install 'testbed[gym]'``).
"""

from testbed.errors import FeatureUnavailable

try:
    import gymnasium
except ImportError as exc:  # the extra is optional: say which one brings it
    raise FeatureUnavailable(f"testbed.gym needs gymnasium, from the gym extra: pip install 'testbed[gym]' "
                             f"({exc})") from exc

from testbed.gym.factory_pick import ENV_ID, FactoryPickEnv, Rewards, Tally

if ENV_ID not in gymnasium.registry:
    # the environment ends its episodes itself (sim.max_episode_s): no TimeLimit wrapper
    gymnasium.register(id=ENV_ID, entry_point="testbed.gym.factory_pick:FactoryPickEnv")

__all__ = ["ENV_ID", "FactoryPickEnv", "Rewards", "Tally"]
