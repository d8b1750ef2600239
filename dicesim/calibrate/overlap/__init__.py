"""The GPU overlap check: compute slowed by communication, read from any shared-schema trace
(:mod:`~dicesim.calibrate.overlap.slowdown`), and the check's simulation, sync-only refit and
error table (:mod:`~dicesim.calibrate.overlap.check`, docs/gpu-overlap-check.md)."""
