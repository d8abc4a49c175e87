"""The user simulator and its world generator (`python -m sim world|run --help`).

The world: `sim.world` (the in-memory model), `sim.settings` (params.yaml's `world:` keys and kinds), the sources
`sim.generator` (a catalog tree), `sim.listening` (factorized listening) and `sim.sources` (which one builds a world),
`sim.draws` (the draws they share: artist sizes, popularity, users), `sim.world_files` (writes world folders) and
`sim.loader` (reads them).
The user: `sim.user` (the course's user model, one session), `sim.rng` (counter-based draws), `sim.env` (a
gymnasium environment). Running: `sim.agents` (the recommenders users talk to), `sim.episodes` (one episode at a
time), `sim.lockstep` (many episodes as array operations), `sim.parallel` (threads and processes), `sim.summary`
(statistics and the printed table) and `sim.run.simulate` (days of sessions, the entry point).
"""

# Before numpy loads: the world generator and the user model compute the same floats on every machine of this kind.
from botify_lab.kernels import pin_numeric_kernels

pin_numeric_kernels()
