"""The pipeline tests' one ordering rule.

pytest-randomly shuffles the suite so that no test leans on another's leftovers. `test_repro.py` is the one
deliberate exception: its tests are steps of one session on one tiny clone (building it is a whole `dvc repro`), the
later ones changing it (experiments, a recommender of one's own), so they keep their file order and run first; the
ones marked `awaits_background` wait for what a second clone does in the background meanwhile, so they run last,
after the rest of the suite, which then uses one core while that work uses the other (about two minutes less than
waiting for it in the middle). pytest-randomly reorders before every other implementation of this hook runs, so
this one sees its order and moves those steps. Under pytest-xdist (`make test`: a test file to a worker, in this
order) the file goes first to one worker, which runs its steps in order, the `awaits_background` ones right after the
others, while the other workers take the rest of the suite.
"""

ORDERED_MODULE = "test_repro.py"


def pytest_collection_modifyitems(items):
    steps = sorted((item for item in items if item.path.name == ORDERED_MODULE), key=lambda item: item.location[1])
    last = [item for item in steps if item.get_closest_marker("awaits_background")]
    first = [item for item in steps if item not in last]
    items[:] = [*first, *(item for item in items if item.path.name != ORDERED_MODULE), *last]
