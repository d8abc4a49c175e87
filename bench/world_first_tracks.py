"""How many tracks the simulated sessions start on, for the listening world of params.yaml with knobs overridden.

The fidelity stage measures it from a simulated log (sessions' first tracks: 207 in the default world against the
real logs' 1,413 to 4,757). Here it comes exactly from the world's arrays, without simulating, so a knob's effect
costs one LightFM fit: a session draws a user uniformly, one of their interests uniformly, then one of the
interest's `interest_neighbours` nearest tracks by inner product uniformly. Prints JSON.

    python bench/world_first_tracks.py --set communities=600 --set epochs=30
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from sim.listening import LISTENING_KNOBS, SHARED_KNOBS, listening_world_arrays  # noqa: E402
from sim.world import nearest_by_inner_product  # noqa: E402

INTEREST_NEIGHBOURS = 10  # the course's default (spec, section 2)


def first_track_shares(embeddings: np.ndarray, interests: np.ndarray, neighbours: int) -> np.ndarray:
    """Each track's probability of starting a session, every (user, interest) pair being equally likely."""
    distinct, counts = np.unique(interests.ravel(), return_counts=True)
    nearest = nearest_by_inner_product(embeddings, distinct, neighbours)
    shares = np.bincount(nearest.ravel(), weights=np.repeat(counts, nearest.shape[1]), minlength=len(embeddings))
    return shares / shares.sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE", help="a world.listening knob")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    args = parser.parse_args()
    world = yaml.safe_load(args.params.read_text())["world"]
    overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in LISTENING_KNOBS or not value:
            parser.error(f"--set {item!r}: expected KNOB=VALUE with KNOB one of {', '.join(LISTENING_KNOBS)}")
        overrides[name] = float(value)
    started = time.monotonic()
    arrays = listening_world_arrays(
        seed=world["seed"],
        n_tracks=world["tracks"],
        n_users=world["users"],
        shared={name: world[name] for name in SHARED_KNOBS},
        listening={**world["listening"], **overrides},
    )
    built = time.monotonic() - started
    embeddings = arrays["embeddings"].astype(np.float64)
    shares = first_track_shares(embeddings, np.asarray(arrays["interests"]), INTEREST_NEIGHBOURS)
    pairs = np.random.default_rng(0).integers(0, len(embeddings), size=(2, 200_000))
    inner = np.einsum("ij,ij->i", embeddings[pairs[0]], embeddings[pairs[1]])
    percentiles = [round(float(x), 2) for x in np.percentile(inner, [1, 50, 99])]
    print(
        json.dumps(
            {
                "benchmark": "world_first_tracks",
                "overrides": overrides,
                "effective_first_tracks": round(1.0 / float((shares**2).sum())),
                "possible_first_tracks": int((shares > 0).sum()),
                "random_pairs_inner_product_p1_p50_p99": percentiles,
                "largest_norm": round(float(np.linalg.norm(embeddings, axis=1).max()), 2),
                "seconds_to_build": round(built, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
