"""Contextual keyed on the session's first track: a random neighbour of the track the session started with.

The course's Contextual follows the last track, so one skipped track can drag the session away from what the user
came for; the first track is the user's interest (the contextual model of the week 4 seminar is trained on exactly
these (first track, track) pairs).
"""

import json


class FirstTrackContextual:
    def __init__(self, neighbours):
        # The course's track recommendations file: catalog rows plus "recommendations".
        with open(neighbours) as lines:
            rows = [json.loads(line) for line in lines if line.strip()]
        self.neighbours = {row["track"]: row["recommendations"] for row in rows}

    def candidates(self, prev_track, context):
        return self.neighbours.get(context.first_track) or self.neighbours.get(prev_track) or [prev_track]

    def recommend_next(self, user, prev_track, prev_track_time, context):
        return context.random.choice(self.candidates(prev_track, context))

    def propensity(self, user, prev_track, served, context):
        candidates = self.candidates(prev_track, context)
        return candidates.count(served) / len(candidates)
