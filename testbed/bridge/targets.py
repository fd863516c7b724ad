"""Turn a ``serve-policy`` TARGET into a factory of policy instances.

TARGET is ``pkg.module:Class`` (or ``pkg.module:function``), called with the
``--arg key=value`` keyword arguments; ``expert`` for the built-in expert; or
``bc:PATH`` for a behaviour-cloning checkpoint. Values of ``--arg`` are parsed as
YAML scalars (``10`` -> int, ``0.5`` -> float, ``true`` -> bool), anything else
stays a string.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml

from testbed.errors import BridgeConfigError
from testbed.policies.protocol import Policy

EXPERT_TARGET = "testbed.policies.expert:ExpertPolicy"
BC_TARGET = "testbed.policies.bc:BCPolicy.load"


def parse_kwargs(pairs: Sequence[str]) -> dict[str, str]:
    """Split ``key=value`` strings into a dict.

    Raises:
        BridgeConfigError: an item has no ``=`` or an empty key.
    """
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BridgeConfigError(f"--arg {pair!r}: expected key=value")
        out[key.strip()] = value
    return out


def _scalar(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, str | int | float | bool) else text


def _import(spec: str, target: str) -> Callable[..., Any]:
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise BridgeConfigError(
            f"serve-policy {target!r}: expected pkg.module:Class, 'expert' or 'bc:PATH'"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise BridgeConfigError(
            f"serve-policy {target!r}: cannot import module {module_name!r}: {exc} (is it on PYTHONPATH?)"
        ) from exc
    for attr in attr_path.split("."):
        if not hasattr(obj, attr):
            raise BridgeConfigError(
                f"serve-policy {target!r}: {module_name!r} has no attribute {attr_path!r}"
            )
        obj = getattr(obj, attr)
    if not callable(obj):
        raise BridgeConfigError(f"serve-policy {target!r}: {attr_path!r} is not callable")
    return obj


def resolve_policy_target(target: str, args: Mapping[str, str] | None = None) -> Callable[[], Policy]:
    """A zero-argument factory that builds the policy named by ``target``.

    Imports happen now (so a bad target fails before the server starts); the
    policy itself is built each time the factory is called (once per client session).

    Raises:
        BridgeConfigError: the target cannot be imported, or builds something that is not a Policy.
    """
    kwargs = {key: _scalar(value) for key, value in (args or {}).items()}
    positional: tuple[Any, ...] = ()
    if target == "expert":
        constructor = _import(EXPERT_TARGET, target)
    elif target.startswith("bc:"):
        path = target[3:]
        if not path:
            raise BridgeConfigError("serve-policy 'bc:': expected bc:PATH to a checkpoint")
        constructor = _import(BC_TARGET, target)
        positional = (path,)
    else:
        constructor = _import(target, target)

    def factory() -> Policy:
        try:
            policy = constructor(*positional, **kwargs)
        except (TypeError, ValueError) as exc:  # an argument of the wrong kind or value
            given = " ".join(f"--arg {key}={value}" for key, value in (args or {}).items()) or "no --arg"
            raise BridgeConfigError(
                f"serve-policy {target!r}: cannot build it with {given}: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(policy, Policy):
            raise BridgeConfigError(
                f"serve-policy {target!r}: built a {type(policy).__name__}, "
                "which lacks spec(), reset() or act()"
            )
        return policy

    return factory
