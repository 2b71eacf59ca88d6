"""Where the time from launch to the first training step goes.

A requeued job on a preemptible cluster pays its start-up every time it comes back, so the
benchmark shows where that time goes. The project marks the moments that matter with
`mark(phase)`: each mark records the phase that has just ended. Recording costs a list append;
nothing is printed or written here. fatigue/first_step.py is the measurement itself.
"""
from __future__ import annotations

import time

# (phase that just ended, time.time() when it ended), in order
PHASES: list[tuple[str, float]] = []


def mark(phase: str) -> None:
    """Record that `phase` has just ended."""
    PHASES.append((phase, time.time()))
