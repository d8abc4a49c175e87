"""The pipeline tests' one ordering rule.

pytest-randomly shuffles the suite so that no test leans on another's leftovers. `test_repro.py` is the one
deliberate exception: its tests are steps of one session on one tiny clone (building it is a whole `dvc repro`), the
later ones changing it (experiments, a recommender of one's own) and the last ones waiting for what a second clone
does in the background meanwhile, so they keep their file order. pytest-randomly reorders before every other
implementation of this hook runs, so this one sees its order and puts those steps back.
"""

ORDERED_MODULES = ("test_repro.py",)


def pytest_collection_modifyitems(items):
    for module in ORDERED_MODULES:
        places = [index for index, item in enumerate(items) if item.path.name == module]
        in_file_order = sorted((items[index] for index in places), key=lambda item: item.location[1])
        for index, item in zip(places, in_file_order, strict=True):
            items[index] = item
