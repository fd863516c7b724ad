"""Overlap rules for asynchronous inference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.bridge.merge import merge_chunks
from testbed.errors import BridgeConfigError, SpecMismatch
from testbed.policies.source import ActionChunk


def _chunk(rows: int, value: float, step: int, dim: int = 3) -> ActionChunk:
    return ActionChunk(actions=np.full((rows, dim), value, np.float32), step=step)


def test_latest_keeps_the_new_chunk() -> None:
    new = _chunk(4, 2.0, step=12)
    merged = merge_chunks(np.zeros((5, 3), np.float32), 10, new, "latest", 0.5)
    np.testing.assert_array_equal(merged, new.actions)


def test_average_merges_only_the_overlapping_steps() -> None:
    # executing covers steps 10..14, new covers 12..15: steps 12, 13, 14 overlap
    merged = merge_chunks(np.zeros((5, 3), np.float32), 10, _chunk(4, 2.0, step=12), "average", 0.0)
    np.testing.assert_allclose(merged[:, 0], [1.0, 1.0, 1.0, 2.0])


def test_weighted_leans_towards_the_new_chunk() -> None:
    merged = merge_chunks(np.zeros((5, 3), np.float32), 10, _chunk(2, 1.0, step=11), "weighted", 0.8)
    np.testing.assert_allclose(merged[:, 0], [0.8, 0.8])


def test_chunks_without_overlap_give_the_new_rows() -> None:
    merged = merge_chunks(np.zeros((2, 3), np.float32), 0, _chunk(3, 5.0, step=7), "average", 0.5)
    np.testing.assert_array_equal(merged, np.full((3, 3), 5.0, np.float32))


def test_unknown_rule_is_refused() -> None:
    with pytest.raises(BridgeConfigError, match="merge rule 'median'"):
        merge_chunks(np.zeros((2, 3), np.float32), 0, _chunk(2, 1.0, 0), "median", 0.5)


def test_weight_outside_unit_interval_is_refused() -> None:
    with pytest.raises(BridgeConfigError, match=r"weight 1\.5"):
        merge_chunks(np.zeros((2, 3), np.float32), 0, _chunk(2, 1.0, 0), "weighted", 1.5)


def test_action_dim_mismatch_is_refused() -> None:
    with pytest.raises(SpecMismatch, match="differ in action_dim"):
        merge_chunks(np.zeros((2, 4), np.float32), 0, _chunk(2, 1.0, 0), "average", 0.5)


@settings(max_examples=200, deadline=None)
@given(
    old_len=st.integers(1, 8),
    new_len=st.integers(1, 8),
    old_step=st.integers(0, 20),
    new_step=st.integers(0, 20),
    weight=st.floats(0.0, 1.0),
    rule=st.sampled_from(["latest", "average", "weighted"]),
)
def test_merge_rows_stay_between_old_and_new_and_keep_alignment(
    old_len: int, new_len: int, old_step: int, new_step: int, weight: float, rule: str
) -> None:
    old = np.full((old_len, 2), -1.0, np.float32)
    new = _chunk(new_len, 1.0, new_step, dim=2)
    merged = merge_chunks(old, old_step, new, rule, weight)
    assert merged.shape == new.actions.shape and merged.dtype == np.float32
    for k in range(new_len):
        step = new_step + k
        overlaps = old_step <= step < old_step + old_len
        if not overlaps or rule == "latest":
            assert merged[k, 0] == 1.0
        else:
            share = 0.5 if rule == "average" else weight
            assert merged[k, 0] == pytest.approx((1 - share) * -1.0 + share * 1.0, abs=1e-6)
