"""testbed: a physical-AI robotics testbed orchestrator.

Korean factory data feeds US-hosted models, which drive Japanese-style robot
controllers inside pybullet simulations.
"""

__version__ = "0.1.0"
