"""The one exception family users see.

The CLI turns any ``TestbedError`` into a single line and exit code 2; a
traceback means a bug in the testbed, never a user mistake.
"""

from __future__ import annotations


class TestbedError(Exception):
    """Base of every error caused by user input, peers or the environment."""

    __test__ = False  # not a pytest test class despite the name


class ScenarioError(TestbedError):
    """A launch file or override is malformed or refers to something unknown."""


class RobotDescriptionError(TestbedError):
    """A robot description in robots/ is missing or inconsistent."""


class SpecMismatch(TestbedError):
    """A policy's spec does not fit the scenario, or a tensor does not fit its spec."""


class PolicyUnavailable(TestbedError):
    """A policy server cannot be reached or did not answer in time."""


class PolicyClientFailed(PolicyUnavailable):
    """A policy client's own worker failed unexpectedly; ``__cause__`` is the original error."""


class ControllerError(TestbedError):
    """A controller refused a command or a lifecycle transition."""


class JobError(TestbedError):
    """A teach-pendant style job is malformed or unreachable."""


class DatasetError(TestbedError):
    """A dataset or factory log is malformed."""


class ComplianceDenied(TestbedError):
    """A transfer or action is forbidden by the compliance policy."""


class BridgeConfigError(TestbedError):
    """A bridge server or client was configured unsafely or inconsistently (TLS files, token, bind address)."""


class ResultsError(TestbedError):
    """An evaluation's results (rows, results.parquet or results.jsonl) are missing or malformed."""


class WorkerFailed(TestbedError):
    """A worker process of an evaluation died or failed; the message names the worker and its record."""


class InvalidCommand(ControllerError):
    """A command sent to a controller is malformed (unknown robot, wrong joint count, NaN/inf)."""


class FeatureUnavailable(TestbedError):
    """A requested feature is not available in this build or configuration (the message names what is missing)."""
