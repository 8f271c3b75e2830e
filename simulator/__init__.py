"""The world outside the platform: simulated payments and listening, landed as raw batches.

The simulator talks to the platform only as the outside world would: files it lands in the
landing zone (and, later, HTTP requests it sends). The platform never imports it.
"""

from simulator.landing import SimulationSummary, run_simulation, simulate_frames

__all__ = ["SimulationSummary", "run_simulation", "simulate_frames"]
