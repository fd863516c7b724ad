"""The expert's chunk rows (``Segment.sample_many``) equal its one-row sampling bit for bit."""

import numpy as np

from testbed.policies.expert import Segment


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
