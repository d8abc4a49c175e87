"""The user simulator and its world generator.

`sim.world` generates and loads worlds, `sim.user` is the course's user model, `sim.env` wraps it as a gymnasium
environment, `sim.agents` holds the recommenders users talk to, and `sim.run.simulate` runs days of sessions
(`python -m sim world|run --help`).
"""
