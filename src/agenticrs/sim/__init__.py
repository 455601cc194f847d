"""The e-commerce simulator: a seeded world with known ground truth, its offline logs and an
online environment for A/B tests. `docs/simulator.md` gives the equations."""

from agenticrs.sim.config import PRESETS, SCENARIOS, ScenarioConfig, SimConfig, sim_preset
from agenticrs.sim.world import World, build_world

__all__ = ["PRESETS", "SCENARIOS", "ScenarioConfig", "SimConfig", "World", "build_world", "sim_preset"]
