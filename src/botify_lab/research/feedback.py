"""The feedback loop in numbers: what a round of served traffic looked like, so rounds can be compared.

A model retrained on the traffic it shaped can narrow what it serves (fewer distinct tracks, more of the popular
ones) while its sessions grow longer; these are the numbers that show either, computed from a service's log and
the public catalog only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from botify_lab.research.logs import sessionize


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts: 0 when every item is served equally, near 1 when a few take all."""
    values = np.sort(np.asarray(counts, dtype=np.float64))
    total = values.sum()
    if len(values) == 0 or total == 0:
        return 0.0
    ranks = np.arange(1, len(values) + 1)
    return float((2.0 * (ranks * values).sum()) / (len(values) * total) - (len(values) + 1) / len(values))


def served_summary(events: pd.DataFrame, artist_of_track: np.ndarray, experiment: str, digits: int = 6) -> dict:
    """Per arm of `experiment` and over all of them: sessions, mean time and tracks per session, and of the served
    tracks (the `/next` answers) the catalog coverage, the Gini of their serve counts over the whole catalog
    (unserved tracks count as 0) and the share by the artist of the track just played."""
    served = events[events["message"] == "next"]
    sessions = sessionize(events)
    arm_of_row = pd.Series([row.get(experiment) for row in served["experiments"]], index=served.index, dtype=object)

    def summary(rows: pd.DataFrame, arm_sessions: pd.DataFrame) -> dict:
        tracks = rows["recommendation"].to_numpy(dtype=np.int64)
        counts = np.bincount(tracks, minlength=len(artist_of_track))
        same_artist = artist_of_track[tracks] == artist_of_track[rows["track"].to_numpy(dtype=np.int64)]
        return {
            "sessions": int(len(arm_sessions)),
            "mean_time_per_session": round(float(arm_sessions["time"].mean()), digits),
            "mean_tracks_per_session": round(float(arm_sessions["tracks"].mean()), digits),
            "served": int(len(tracks)),
            "coverage_share": round(float((counts > 0).mean()), digits),
            "gini": round(gini(counts), digits),
            "same_artist_share": round(float(same_artist.mean()) if len(tracks) else 0.0, digits),
        }

    arms = sorted(arm for arm in arm_of_row.unique() if arm is not None)
    return {
        "all": summary(served, sessions),
        "arms": {arm: summary(served[arm_of_row == arm], sessions[sessions[experiment] == arm]) for arm in arms},
    }
