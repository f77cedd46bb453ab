"""Progressive resolution: the image side at each point of data.size_schedule."""

from __future__ import annotations

from vitkit.data.resolution import size_at


def test_size_at_follows_the_schedule():
    schedule = [(0.0, 16), (0.4, 24), (0.7, 32)]
    assert [size_at(schedule, p, (32, 32))[0] for p in (0.0, 0.39, 0.4, 0.69, 0.7, 1.0)] == [16, 16, 24, 24, 32, 32]
    assert size_at(None, 0.5, (32, 32)) == (32, 32)
