"""What an evaluation sweeps: launch-file variations (``--sweep``) crossed with policies (``--policy``).

A variation is one combination of ``--sweep key=v1,v2,...`` values (the cross product, in the order the
flags were given); each value is read like a ``key:=value`` override (a YAML scalar or flow collection).
A policy is ``NAME=ENDPOINT`` with ENDPOINT one of ``grpc://...``, ``ws://...`` (openpi), ``builtin:TARGET``
or ``serve:TARGET`` (TARGET as for ``policy.builtin``/``policy.serve``: ``expert``, ``pkg.module:Class``);
constructor arguments come from ``--policy-arg NAME.key=value`` (NAME may hold dots: the longest NAME given
by a ``--policy`` that the argument starts with is the one). Both become launch-file overrides.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from testbed.errors import ScenarioError
from testbed.scenario.overrides import parse_override

DEFAULT_POLICY = "default"  # the launch file's own policy, when no --policy is given
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_NOT_SWEPT = {"episodes": "use --episodes N", "name": "the run's name is not a variation"}


@dataclass(frozen=True)
class Variation:
    """One point of the sweep's cross product.

    Args:
        id: ``v0``, ``v1``, ... (index in the cross product).
        label: human form, ``cell.conveyor.speed=0.1`` (``base`` without a sweep).
        values: key -> value as given on the command line.
    """

    id: str
    label: str
    values: dict[str, str] = field(default_factory=dict)

    def overrides(self) -> list[str]:
        """The variation as ``key:=value`` overrides."""
        return [f"{key}:={value}" for key, value in self.values.items()]

    def to_json(self) -> dict[str, object]:
        """As stored in ``evaluation.json``."""
        return {"id": self.id, "label": self.label, "values": dict(self.values)}


@dataclass(frozen=True)
class PolicyChoice:
    """A policy under evaluation.

    Args:
        name: its name in results (``default``: the launch file's own policy).
        endpoint: as given (``builtin:expert``, ``serve:pkg.mod:Cls``, ``grpc://host:port``), "" for ``default``.
        args: constructor arguments for ``builtin:``/``serve:``.
    """

    name: str
    endpoint: str = ""
    args: dict[str, str] = field(default_factory=dict)

    def overrides(self) -> list[str]:
        """The launch-file overrides that select this policy (none for ``default``)."""
        if not self.endpoint:
            return []
        args = f"policy.args:={json.dumps(self.args)}"
        kind, _, target = self.endpoint.partition(":")
        if kind == "builtin":
            return ["policy.serve:=null", "policy.endpoint:=null", "policy.protocol:=testbed",
                    f"policy.builtin:={json.dumps(target)}", args]
        if kind == "serve":
            return ["policy.builtin:=null", "policy.endpoint:=null", "policy.protocol:=testbed",
                    f"policy.serve:={json.dumps(target)}", args]
        protocol = "openpi" if self.endpoint.startswith(("ws://", "wss://")) else "testbed"
        return ["policy.builtin:=null", "policy.serve:=null", f"policy.protocol:={protocol}",
                f"policy.endpoint:={json.dumps(self.endpoint)}"]

    def to_json(self) -> dict[str, object]:
        """As stored in ``evaluation.json``."""
        return {"name": self.name, "endpoint": self.endpoint, "args": dict(self.args)}


def split_values(text: str) -> list[str]:
    """Split ``v1,v2,...`` at top-level commas (commas inside ``[...]``, ``{...}`` or quotes stay)."""
    values, depth, quote, current = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append(current.strip())
            current = ""
            continue
        current += ch
    values.append(current.strip())
    return values


def parse_sweep(text: str) -> tuple[str, list[str]]:
    """Parse one ``--sweep key=v1,v2,...``.

    Raises:
        ScenarioError: naming ``--sweep`` and what was expected.
    """
    at = text.find("=")
    key, rest = (text[:at], text[at + 1:]) if at >= 0 else (text, "")
    key = key[:-1] if key.endswith(":") else key  # key:=v1,v2 is read like key=v1,v2
    key = key.strip()
    if at < 0 or not key:
        raise ScenarioError(f"--sweep {text!r}: expected key=v1,v2,... (e.g. --sweep cell.conveyor.speed=0.1,0.2)")
    root = key.split(".")[0].split("[")[0]
    if root in _NOT_SWEPT and key == root:
        raise ScenarioError(f"--sweep {text!r}: {key} cannot be swept ({_NOT_SWEPT[root]})")
    values = split_values(rest)
    if any(v == "" for v in values):
        raise ScenarioError(f"--sweep {text!r}: empty value in {rest!r}; expected key=v1,v2,... with no empty values")
    if len(set(values)) != len(values):
        raise ScenarioError(f"--sweep {text!r}: a value is repeated; each value gives one variation")
    for value in values:
        try:
            parse_override(f"{key}:={value}")
        except ScenarioError as exc:
            raise ScenarioError(f"--sweep {text!r}: {exc}") from exc
    return key, values


def variations(sweeps: Sequence[str]) -> list[Variation]:
    """The cross product of every ``--sweep`` (one ``base`` variation when there is none).

    Raises:
        ScenarioError: a malformed ``--sweep`` or one key swept twice.
    """
    parsed: list[tuple[str, list[str]]] = []
    for text in sweeps:
        key, values = parse_sweep(text)
        if any(key == k for k, _ in parsed):
            raise ScenarioError(f"--sweep {text!r}: {key} is already swept by an earlier --sweep; give its values "
                                "in one flag")
        parsed.append((key, values))
    if not parsed:
        return [Variation("v0", "base", {})]
    out = []
    for i, combo in enumerate(itertools.product(*(values for _, values in parsed))):
        values = {key: value for (key, _), value in zip(parsed, combo, strict=True)}
        out.append(Variation(f"v{i}", ", ".join(f"{k}={v}" for k, v in values.items()), values))
    return out


def parse_policy(text: str) -> PolicyChoice:
    """Parse one ``--policy NAME=ENDPOINT``.

    The endpoint is checked by the parsers the run uses (``host:port`` of a grpc:// or ws:// endpoint; a
    builtin:/serve: target resolved by the policy-server's resolver, which imports it but builds nothing),
    so a bad one fails here, before an evaluation directory exists, not in every worker.

    Raises:
        ScenarioError: naming ``--policy`` and what was expected.
    """
    name, sep, endpoint = text.partition("=")
    name, endpoint = name.strip(), endpoint.strip()
    expected = ("expected NAME=ENDPOINT with ENDPOINT grpc://HOST:PORT, ws://HOST:PORT, builtin:TARGET or "
                "serve:TARGET (e.g. --policy expert=builtin:expert)")
    if not sep or not name or not endpoint:
        raise ScenarioError(f"--policy {text!r}: {expected}")
    if not _NAME.match(name):
        raise ScenarioError(f"--policy {text!r}: name {name!r} may hold only letters, digits, '_', '.' and '-'")
    kind, _, target = endpoint.partition(":")
    if kind in ("builtin", "serve"):
        if not target:
            raise ScenarioError(f"--policy {text!r}: {kind}: needs a target, e.g. {kind}:expert or "
                                f"{kind}:pkg.module:Class")
        _check_target(text, kind, target)
    elif endpoint.startswith(("grpc://", "grpcs://")):
        from testbed.bridge.client import parse_endpoint
        from testbed.errors import BridgeConfigError

        try:
            parse_endpoint(endpoint)
        except BridgeConfigError as exc:
            raise ScenarioError(f"--policy {text!r}: {exc}") from exc
    elif endpoint.startswith(("ws://", "wss://")):
        try:
            from testbed.bridge.openpi_source import parse_ws_endpoint
        except ImportError as exc:
            raise ScenarioError(f"--policy {text!r}: a ws:// endpoint (openpi) needs the openpi extra: pip install "
                                f"'testbed[openpi]' ({exc})") from exc
        try:
            parse_ws_endpoint(endpoint)
        except ScenarioError as exc:
            raise ScenarioError(f"--policy {text!r}: {exc}") from exc
    else:
        raise ScenarioError(f"--policy {text!r}: unknown endpoint {endpoint!r}; {expected}")
    return PolicyChoice(name, endpoint)


def _check_target(text: str, kind: str, target: str) -> None:
    """Resolve a builtin:/serve: target as the run will (imports only; constructor arguments come later)."""
    from testbed.bridge.targets import resolve_policy_target
    from testbed.errors import BridgeConfigError

    try:
        resolve_policy_target(target)
    except BridgeConfigError as exc:
        raise ScenarioError(f"--policy {text!r}: {kind}:{target} is not a policy the testbed can build "
                            f"({exc})") from exc


def _split_policy_arg(text: str, names: Sequence[str]) -> tuple[str, str, str]:
    """``NAME.key=value`` -> (NAME, key, value), NAME the longest given policy name the text starts with.

    Raises:
        ScenarioError: not NAME.key=value, or no given policy name fits.
    """
    head, sep, value = text.partition("=")
    if not sep or "." not in head or "" in head.split("."):
        raise ScenarioError(f"--policy-arg {text!r}: expected NAME.key=value (e.g. --policy-arg bc.path=model.npz)")
    fits = [n for n in names if head.startswith(n + ".")]
    if not fits:
        parts = head.split(".")
        tried = [".".join(parts[:i]) for i in range(1, len(parts))]
        raise ScenarioError(f"--policy-arg {text!r}: no --policy named {' or '.join(repr(t) for t in tried)} "
                            f"(given: {', '.join(names) or 'none'})")
    name = max(fits, key=len)
    return name, head[len(name) + 1:], value


def policies(texts: Sequence[str], args: Sequence[str] = ()) -> list[PolicyChoice]:
    """Every ``--policy`` with its ``--policy-arg NAME.key=value`` arguments; ``default`` when none is given.

    Raises:
        ScenarioError: a malformed flag, a repeated name, or an argument for an unknown or remote policy.
    """
    chosen = [parse_policy(t) for t in texts]
    names = [p.name for p in chosen]
    for name in names:
        if names.count(name) > 1:
            raise ScenarioError(f"--policy: the name {name!r} is given more than once; each policy needs its own name")
    by_name = {p.name: p for p in chosen}
    for text in args:
        name, key, value = _split_policy_arg(text, names)
        policy = by_name[name]
        if not policy.endpoint.startswith(("builtin:", "serve:")):
            raise ScenarioError(f"--policy-arg {text!r}: policy {name!r} is a remote endpoint; constructor "
                                "arguments apply to builtin: and serve: policies")
        policy.args[key] = value
    return chosen or [PolicyChoice(DEFAULT_POLICY)]


def episode_id(variation: str, policy: str, episode: int) -> str:
    """The stable id of one episode of an evaluation: ``<variation>/<policy>/<episode:04d>``."""
    return f"{variation}/{policy}/{episode:04d}"


def parse_episode_id(text: str) -> tuple[str, str, int]:
    """Split an episode id into (variation, policy, episode).

    Raises:
        ScenarioError: naming ``--only`` and the expected form.
    """
    parts = text.split("/")
    if len(parts) != 3 or not re.fullmatch(r"v\d+", parts[0]) or not parts[1] or not parts[2].isdigit():
        raise ScenarioError(f"--only {text!r}: expected an episode id VARIATION/POLICY/EPISODE, e.g. v1/default/0007")
    return parts[0], parts[1], int(parts[2])
