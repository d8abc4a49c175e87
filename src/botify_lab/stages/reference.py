"""Stage `reference`: the true-neighbour reference (botify_lab.pipeline.reference), each track's 10 nearest tracks
under the hidden embeddings, written once per world for the stages that serve it as a labelled reference arm (the
leaderboard, off-policy evaluation, the fidelity checks), instead of once in each of them."""

from __future__ import annotations

import argparse

from botify_lab.pipeline import layout
from botify_lab.pipeline.reference import REFERENCE_LABEL, write_reference_recommendations


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    path = write_reference_recommendations(layout.WORLD, layout.REFERENCE_RECS)
    print(f"reference: {REFERENCE_LABEL!r}, each track's 10 nearest tracks under the hidden embeddings, in {path}")


if __name__ == "__main__":
    main()
