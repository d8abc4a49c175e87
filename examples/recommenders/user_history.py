"""A user-history recommender: a track the user listened to (nearly) to the end in an earlier session and has not
heard in this one; one of the `top_k` most popular tracks not yet heard in this session when there is none."""

import itertools
import json


class UserHistory:
    def __init__(self, top_tracks, liked_above=0.8, top_k=100):
        with open(top_tracks) as file:
            self.top = json.load(file)
        self.liked_above, self.top_k = liked_above, top_k

    def recommend_next(self, user, prev_track, prev_track_time, context):
        heard = {track for track, _ in context.session}
        liked = [
            track
            for session in context.earlier_sessions
            for track, time in session
            if time >= self.liked_above and track not in heard
        ]
        fresh_top = list(itertools.islice((track for track in self.top if track not in heard), self.top_k))
        return context.random.choice(liked or fresh_top or self.top)
