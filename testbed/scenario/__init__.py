"""Launch files: schema, loading, ``key:=value`` overrides and located validation errors."""

from testbed.scenario.loader import LoadedScenario, load
from testbed.scenario.schema import Scenario
from testbed.scenario.workload import PART_TYPES, PartArrival

__all__ = ["PART_TYPES", "LoadedScenario", "PartArrival", "Scenario", "load"]
