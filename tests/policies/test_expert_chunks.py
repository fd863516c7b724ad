"""The expert's chunk rows (``Segment.sample_many``, the tabulated ``Segment.chunk``) equal one-row sampling bit
for bit."""

import dataclasses

import numpy as np

from testbed.policies.expert import TABULATED_STEPS_MAX, Segment


def test_sample_many_equals_sample_row_by_row() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        points = int(rng.integers(2, 7))
        seg = Segment(rng.uniform(-3, 3, (points, 6)), int(rng.integers(0, 50)), float(rng.uniform(0, 80)), False)
        if rng.random() < 0.1:
            seg.duration_steps = 0.0  # a zero-length plan jumps to its goal
        first, count = int(rng.integers(-5, 150)), int(rng.integers(1, 20))
        many = seg.sample_many(first, count)
        one = np.stack([seg.sample(first + k) for k in range(count)])
        assert many.dtype == one.dtype and np.array_equal(many, one)
        assert np.array_equal(many.astype(np.float32), one.astype(np.float32))


def _chunk_by_sampling(seg: Segment, first: int, count: int) -> np.ndarray:
    """What ``ExpertPolicy.act`` returned before chunks were tabulated: every row sampled afresh, float32."""
    chunk = np.empty((count, seg.waypoints.shape[1] + 1), dtype=np.float32)
    chunk[:, :-1] = np.stack([seg.sample(first + k) for k in range(count)])
    chunk[:, -1] = [1.0 if seg.suction and first + k >= seg.suction_from else 0.0 for k in range(count)]
    return chunk


def test_tabulated_chunks_equal_rows_sampled_at_each_step() -> None:
    rng = np.random.default_rng(11)
    for _ in range(200):
        points = int(rng.integers(2, 6))
        start = int(rng.integers(0, 40))
        duration = float(rng.choice([0.0, 0.5, 1.0, rng.uniform(0, 90)]))
        seg = Segment(rng.uniform(-3, 3, (points, 6)), start, duration, bool(rng.random() < 0.6))
        if rng.random() < 0.5:  # a catch: the vacuum comes on at a (fractional) step, maybe after the motion
            seg = dataclasses.replace(seg, suction_from=start + float(rng.uniform(-5, duration + 30)))
        count = int(rng.integers(1, 16))
        # act asks from the segment's first step on, one step at a time, long past its end; first also a jump
        steps = [*range(start, start + int(duration) + 2 * count + 5), start + 10_000]
        for first in steps:
            chunk = seg.chunk(first, count)
            assert chunk.dtype == np.float32 and chunk.flags.writeable
            assert np.array_equal(chunk, _chunk_by_sampling(seg, first, count))
            chunk[:] = np.nan  # the caller owns what it got: the next chunk is not disturbed
        assert np.array_equal(seg.chunk(start - 3, count), _chunk_by_sampling(seg, start - 3, count))


def test_replacing_the_vacuum_step_starts_a_new_table() -> None:
    seg = Segment(np.array([[0.0] * 6, [1.0] * 6]), 0, 20.0, True)
    assert seg.chunk(0, 10)[:, -1].tolist() == [1.0] * 10  # on from the start (suction_from -inf)
    later = dataclasses.replace(seg, suction_from=25.5)
    assert later.chunk(20, 10)[:, -1].tolist() == [0.0] * 6 + [1.0] * 4  # steps 26.. are >= 25.5
    assert np.array_equal(later.chunk(20, 10)[:, :-1], seg.chunk(20, 10)[:, :-1])


def test_a_plan_too_long_to_tabulate_is_sampled_each_time() -> None:
    seg = Segment(np.array([[0.0] * 6, [0.5] * 6, [1.0] * 6]), 3, 2.0 * TABULATED_STEPS_MAX, True, 10.0)
    for first in (3, 4, 500, 4000, 9000):
        assert np.array_equal(seg.chunk(first, 10), _chunk_by_sampling(seg, first, 10))
    assert seg._table is None
