"""Applying transformations before data leaves its site: drop, pseudonymize, coarsen, aggregate.

Live messages (a dict of arrays, as a policy client sends) go through a ``MessageFilter``; table columns
(dataset export) through ``transform_column``. Pseudonyms are HMAC-SHA256 of the value under the sending
site's key: stable for one key, unlinkable without it, and never the raw value.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from testbed.errors import ComplianceDenied
from testbed.sites.profile import Transformation

PSEUDONYM_PREFIX = "psn-"
PSEUDONYM_HEX = 20  # 80 bits: no collision in any log this testbed will see

FieldKind = Literal["tensor", "number", "text", "timestamp", "artifact"]


class Pseudonymizer:
    """Keyed pseudonyms for one site.

    Args:
        key: the site's secret (see ``testbed.sites.keys``); it never leaves this object.
        site: the site the key belongs to (for reports).
    """

    def __init__(self, key: bytes, site: str) -> None:
        self._key = bytes(key)
        self.site = site

    @property
    def key_id(self) -> str:
        """A short public fingerprint of the key, so two outputs can be seen to share one (reveals nothing of it)."""
        return hmac.new(self._key, b"testbed key id", hashlib.sha256).hexdigest()[:12]

    def pseudonym(self, field: str, value: str) -> str:
        """``psn-`` and 20 hex digits of HMAC-SHA256(key, field NUL value)."""
        # the field name separates domains: one operator number in two columns gives two unrelated pseudonyms
        digest = hmac.new(self._key, f"{field}\0{value}".encode(), hashlib.sha256).hexdigest()
        return PSEUDONYM_PREFIX + digest[:PSEUDONYM_HEX]

    def __repr__(self) -> str:  # never print the key
        return f"Pseudonymizer(site={self.site!r}, key_id={self.key_id!r})"


def not_applicable(transformation: Transformation, kind: FieldKind, *, table: bool) -> str | None:
    """Why ``transformation`` cannot apply to a field of ``kind``, or None when it can.

    Args:
        transformation: what a rule asks for.
        kind: the field's kind.
        table: True for a dataset column (aggregate applies), False for a live message.
    """
    allowed: dict[str, tuple[str, ...]] = {
        "drop": ("tensor", "number", "text", "timestamp", "artifact"),
        "pseudonymize": ("text",),
        "coarsen": ("tensor", "number", "timestamp"),
        "aggregate": ("number", "text", "timestamp") if table else (),
    }
    if kind in allowed[transformation.kind]:
        return None
    if transformation.kind == "aggregate" and not table:
        return "aggregate summarises a table column; a live message cannot be aggregated"
    return f"{transformation.kind} cannot apply to a {kind} field"


@dataclass(frozen=True)
class ColumnResult:
    """A transformed column: new values, or None when the column no longer travels (dropped or aggregated).

    Args:
        values: the column to send, or None.
        summary: for aggregate, what is sent instead (count, mean, min, max or distinct).
    """

    values: list[Any] | None
    summary: dict[str, Any] | None = None


def coarsen_number(value: float, step: float) -> float:
    """``value`` rounded to a multiple of ``step`` (half away from zero), without float noise."""
    rounded = math.floor(abs(value) / step + 0.5) * step
    return round(math.copysign(rounded, value), 9)


def coarsen_time(value: dt.datetime, step_s: float) -> dt.datetime:
    """``value`` floored to a multiple of ``step_s`` seconds since the epoch (its UTC offset kept)."""
    epoch = value.timestamp()
    floored = math.floor(epoch / step_s) * step_s
    return dt.datetime.fromtimestamp(floored, tz=value.tzinfo or dt.UTC)


def infer_kind(values: Sequence[Any]) -> FieldKind:
    """The kind of a column: numbers, times (also ISO-8601 text) or text."""
    present = [v for v in values if v is not None and v != ""]
    if present and all(isinstance(v, dt.datetime) for v in present):
        return "timestamp"
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "number"
    if present and all(isinstance(v, str) for v in present):
        if all(_as_float(v) is not None for v in present):
            return "number"
        if all(_as_time(v) is not None for v in present):
            return "timestamp"
    return "text"


def _as_float(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _as_time(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None


def transform_column(
    field: str,
    values: Sequence[Any],
    transformation: Transformation | None,
    pseudonymizer: Pseudonymizer | None = None,
) -> ColumnResult:
    """Apply ``transformation`` to a table column (None: unchanged).

    Values keep their representation: text stays text (a CSV column), numbers stay numbers. Empty values
    (None or "") stay empty: there is nothing to hide in them.

    Raises:
        ComplianceDenied: the transformation cannot apply to this column, or pseudonymize has no key.
    """
    if transformation is None:
        return ColumnResult(list(values))
    kind = infer_kind(values)
    problem = not_applicable(transformation, kind, table=True)
    if problem is not None:
        raise ComplianceDenied(f"field {field}: {problem}")
    if transformation.kind == "drop":
        return ColumnResult(None)
    if transformation.kind == "pseudonymize":
        if pseudonymizer is None:
            raise ComplianceDenied(f"field {field}: pseudonymize needs the sending site's key")
        return ColumnResult([v if v is None or v == "" else pseudonymizer.pseudonym(field, str(v)) for v in values])
    if transformation.kind == "coarsen":
        step = float(transformation.step or 1.0)
        return ColumnResult([_coarsen_cell(v, kind, step) for v in values])
    return ColumnResult(None, summary=_summary(values, kind))


def _coarsen_cell(value: Any, kind: FieldKind, step: float) -> Any:
    if value is None or value == "":
        return value
    if kind == "timestamp":
        stamp = value if isinstance(value, dt.datetime) else _as_time(value)
        assert stamp is not None  # infer_kind checked every value
        coarse = coarsen_time(stamp, step)
        return coarse if isinstance(value, dt.datetime) else coarse.isoformat()
    number = coarsen_number(float(value), step)
    if isinstance(value, str):  # a CSV cell stays text, without float noise
        return str(int(number)) if number.is_integer() and float(step).is_integer() else repr(number)
    return int(number) if isinstance(value, int) and number.is_integer() else number


def _summary(values: Sequence[Any], kind: FieldKind) -> dict[str, Any]:
    present = [v for v in values if v is not None and v != ""]
    if kind == "number":
        numbers = [float(v) for v in present]
        mean = sum(numbers) / len(numbers) if numbers else None
        return {"count": len(numbers), "mean": mean, "min": min(numbers, default=None),
                "max": max(numbers, default=None)}
    if kind == "timestamp":
        stamps = sorted(v if isinstance(v, dt.datetime) else _as_time(v) for v in present)
        return {"count": len(stamps), "first": stamps[0].isoformat() if stamps else None,
                "last": stamps[-1].isoformat() if stamps else None}
    return {"count": len(present), "distinct": len(set(map(str, present)))}


class MessageFilter:
    """A flow's per-field transformations, applied to each outbound message before it leaves.

    Args:
        flow_id: the flow, for messages.
        planned: every field the flow may carry -> its transformation (None: sent as is).
        pseudonymizer: the sending site's pseudonymizer (needed only for pseudonymize).
    """

    def __init__(
        self,
        flow_id: str,
        planned: Mapping[str, Transformation | None],
        pseudonymizer: Pseudonymizer | None = None,
    ) -> None:
        self.flow_id = flow_id
        self._planned = dict(planned)
        self._changes = {k: t for k, t in planned.items() if t is not None}
        self._pseudonymizer = pseudonymizer
        if any(t.kind == "pseudonymize" for t in self._changes.values()) and pseudonymizer is None:
            raise ComplianceDenied(f"{flow_id}: pseudonymize needs the sending site's key")

    @property
    def identity(self) -> bool:
        """True when no planned field is changed (messages still may carry only planned fields)."""
        return not self._changes

    def apply(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """The message as it may leave: dropped fields removed, others transformed; the input is not changed.

        Raises:
            ComplianceDenied: the message carries a field the flow plan never decided on.
        """
        unplanned = [k for k in message if k not in self._planned]
        if unplanned:
            raise ComplianceDenied(
                f"{self.flow_id}: field {unplanned[0]} was not in the flow plan checked at launch; it may not "
                f"leave (planned: {', '.join(sorted(self._planned))})"
            )
        if not self._changes:
            return dict(message)
        out: dict[str, Any] = {}
        for key, value in message.items():
            change = self._changes.get(key)
            if change is None:
                out[key] = value
            elif change.kind == "coarsen":
                out[key] = _coarsen_array(value, float(change.step or 1.0))
            elif change.kind == "pseudonymize":
                assert self._pseudonymizer is not None  # checked in __init__
                out[key] = _pseudonymize_value(self._pseudonymizer, key, value)
            # drop: left out; aggregate never reaches a live flow (the plan refuses it)
        return out


def _coarsen_array(value: Any, step: float) -> Any:
    array = np.asarray(value)
    if array.dtype.kind == "f":
        return (np.round(array / step) * step).astype(array.dtype, copy=False)
    if array.dtype.kind in "iu":
        istep = max(1, round(step))
        return ((array + istep // 2) // istep * istep).astype(array.dtype, copy=False)
    raise ComplianceDenied(f"coarsen cannot apply to an array of dtype {array.dtype}")


def _pseudonymize_value(pseudonymizer: Pseudonymizer, field: str, value: Any) -> Any:
    if isinstance(value, str):
        return pseudonymizer.pseudonym(field, value)
    array = np.asarray(value)
    if array.dtype.kind in "US":
        flat = [pseudonymizer.pseudonym(field, str(v)) for v in array.reshape(-1).tolist()]
        return np.asarray(flat).reshape(array.shape)
    raise ComplianceDenied(f"field {field}: pseudonymize applies to identifiers (text), not {array.dtype} arrays")
