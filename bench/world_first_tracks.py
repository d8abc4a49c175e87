"""How sessions start in the listening world of params.yaml, with knobs overridden (or in a world folder).

The fidelity stage measures from a simulated log how many tracks sessions start on (the real logs: 1,413 to 4,757;
207 in a world fitted at the course's learning rate of 0.01), and how many sessions start on one of their user's own
interests (0.077 to 0.097; there 0.006) or on a track by the artist of one (0.55 to 0.59; there 0.071). Here all
three come exactly from the world's arrays, without simulating, with the share of interests and of first tracks by
one-track artists (the sessions StickyArtist can only repeat), so a knob's effect costs one LightFM fit (built as
`make world-search` builds its candidates, read by the simulator's own candidate lists): a session draws a user
uniformly, one of their interests uniformly, then one of the interest's `interest_neighbours` (the course's 10)
nearest tracks by inner product uniformly.

`--learnable` adds what a model of (first track, track), such as the course's Contextual, could learn there at best
(`botify_lab.inprocess.world_checks.first_track_ceiling`: the share of the listen time's variance that an exact
first-track x track table explains, and how much of that table's interaction its largest directions hold). `--world`
reads a world folder as it is (e.g. data) instead of building one. Prints JSON.

    python bench/world_first_tracks.py --set communities=600 --set epochs=30
    python bench/world_first_tracks.py --world data --learnable
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from botify_lab.inprocess.world_checks import first_track_candidates, first_track_ceiling  # noqa: E402
from botify_lab.pipeline.params import load_params  # noqa: E402
from botify_lab.tools.world_search import candidate_builder, search_base  # noqa: E402
from sim.listening import LISTENING_KNOBS  # noqa: E402
from sim.loader import load_world, world_from_arrays  # noqa: E402


def first_track_shares(world, candidates: np.ndarray) -> np.ndarray:
    """Each track's probability of starting a session."""
    shares = np.bincount(candidates.ravel(), minlength=world.n_tracks).astype(np.float64)
    return shares / shares.sum()


def interest_start_shares(world, candidates: np.ndarray) -> tuple[float, float]:
    """The probabilities that a session starts on one of its user's own interests (the real logs: 0.077-0.097) and
    on a track by the artist of one of them (0.55-0.59)."""
    per_user = np.diff(world.users.interest_offsets)[0]
    own = world.users.interests.reshape(-1, per_user)[np.repeat(np.arange(world.n_users), per_user)]
    on_own = (candidates[:, :, None] == own[:, None, :]).any(axis=2)
    artist = world.track_artist
    by_artist = (artist[candidates][:, :, None] == artist[own][:, None, :]).any(axis=2)
    return float(on_own.mean()), float(by_artist.mean())


# Measured from the course's users.json and tracks.json (../shared/upstream-world) and the first tracks of 7,821
# sessions, every arm, of six of its real logs (../shared/real-logs: vikstr__data_1711, marychatte__data,
# Panamec1__data, aamamaev__data, red19958__input_hw, KirillPushkarev__data): the shares of interests, first tracks
# and catalog tracks whose artist has no other track in the catalog.
COURSE_ONE_TRACK_ARTIST_SHARES = {"interests": 0.124, "first_tracks": 0.111, "catalog": 0.129}


def one_track_artist_shares(world, candidates: np.ndarray) -> dict:
    """Shares of the interests, of the first tracks (every candidate equally likely) and of the catalog whose artist
    has no other track."""
    one_track = np.bincount(world.track_artist)[world.track_artist] == 1
    return {
        "interests": round(float(one_track[world.users.interests].mean()), 3),
        "first_tracks": round(float(one_track[candidates].mean()), 3),
        "catalog": round(float(one_track.mean()), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE", help="a world.listening knob")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--world", type=Path, help="read this world folder (e.g. data) instead of building one")
    parser.add_argument(
        "--learnable", action="store_true", help="also what a (first track, track) model could learn (15-60 s)"
    )
    args = parser.parse_args()
    if args.world and args.set:
        parser.error("--set builds a world from the knobs; --world reads one as it is: give one of them")
    params = load_params(args.params)
    overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in LISTENING_KNOBS or not value:
            parser.error(f"--set {item!r}: expected KNOB=VALUE with KNOB one of {', '.join(LISTENING_KNOBS)}")
        overrides[name] = float(value)
    started = time.monotonic()
    if args.world:
        world = load_world(args.world)
    else:
        if params.world.source != "listening":
            parser.error(f"{args.params}: world.source is {params.world.source!r}; this bench builds a listening world")
        try:
            base, _ = search_base(params)
        except ValueError as error:
            parser.error(str(error))
        world = world_from_arrays(candidate_builder(base)(overrides))
    built = time.monotonic() - started
    candidates = first_track_candidates(world)
    shares = first_track_shares(world, candidates)
    own_share, artist_share = interest_start_shares(world, candidates)
    learnable = {"learnable": first_track_ceiling(world)} if args.learnable else {}
    print(
        json.dumps(
            {
                "benchmark": "world_first_tracks",
                "world": str(args.world) if args.world else "built from params.yaml's world: section",
                "overrides": overrides,
                "effective_first_tracks": round(1.0 / float((shares**2).sum())),
                "possible_first_tracks": int((shares > 0).sum()),
                "own_interest_start_share": round(own_share, 4),
                "interest_artist_start_share": round(artist_share, 4),
                "one_track_artist_shares": one_track_artist_shares(world, candidates),
                "course_one_track_artist_shares": COURSE_ONE_TRACK_ARTIST_SHARES,
                "largest_norm": round(float(np.linalg.norm(world.embeddings, axis=1).max()), 2),
                **learnable,
                "seconds_to_build": round(built, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
