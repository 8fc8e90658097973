"""aiowal's benchmarks (``make bench``; ``python -m benchmarks [--quick]``): one JSON document of medians and ratios,
every figure measured in the same run, repeated and interleaved with what it is compared to."""

from benchmarks.runner import run

__all__ = ["run"]
