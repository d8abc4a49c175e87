"""params.yaml's `world:` section as the simulator reads it: which keys choose the world's source, which set its
size, and the kind of value each knob takes. The pipeline's schema (`botify_lab.pipeline.params`) and
`python -m sim world` both build on these tables, so a key, its kind and its meaning are written once.
"""

from __future__ import annotations

SOURCES = ("generated", "listening", "course")
# Keys of the `world:` section that choose the world's source rather than set a knob.
SOURCE_KEYS = ("source", "course_dir", "listening")

# The kinds of value a knob takes; the schema turns each into a typed, bounded field.
COUNT = "count"  # an integer >= 1
SEED = "seed"  # an integer >= 0
REAL = "real"  # any float
NON_NEGATIVE = "non_negative"  # a float >= 0
POSITIVE = "positive"  # a float > 0
SHARE = "share"  # a float within [0, 1]
INTEGER_KINDS = frozenset({COUNT, SEED})


def kind_type(kind: str) -> type:
    """The Python type a value of this kind is read as (a flag's type, a knob's conversion)."""
    return int if kind in INTEGER_KINDS else float


# The size settings: `world:` key -> (the generators' keyword argument, kind, help of `python -m sim world`).
SIZE_SETTINGS: dict[str, tuple[str, str, str]] = {
    "seed": ("seed", SEED, "seed of every random choice"),
    "tracks": ("n_tracks", COUNT, "catalog size"),
    "users": ("n_users", COUNT, "number of simulated users"),
    "dim": ("dim", COUNT, "dimension of the hidden track embeddings"),
}


# The structure knobs in world.json's order: the kind of value each takes and the help `python -m sim world
# --help` shows. Their values come from the caller (params.yaml's `world:` section).
KNOB_SPECS: dict[str, tuple[str, str]] = {
    "genres": (
        COUNT,
        "number of genres",
    ),
    "styles_per_genre": (
        COUNT,
        "styles inside each genre",
    ),
    "artist_size_mu": (
        REAL,
        "an artist's catalog size is ceil(lognormal(mu, sigma)) up to artist_size_max: its mu "
        "(fitted to the course catalog: median 1 track, 90th percentile 11, max 80)",
    ),
    "artist_size_sigma": (
        NON_NEGATIVE,
        "lognormal sigma of an artist's catalog size (larger = more skewed)",
    ),
    "artist_size_max": (
        COUNT,
        "largest catalog of an artist (the lognormal is truncated there)",
    ),
    "genre_zipf": (
        NON_NEGATIVE,
        "Zipf exponent of genre sizes",
    ),
    "genre_spread": (
        NON_NEGATIVE,
        "norm scale of genre centres",
    ),
    "style_spread": (
        NON_NEGATIVE,
        "norm scale of a style's offset from its genre",
    ),
    "artist_spread": (
        NON_NEGATIVE,
        "norm scale of an artist's offset from its style",
    ),
    "track_spread": (
        NON_NEGATIVE,
        "norm scale of a track's offset from its artist",
    ),
    "artist_popularity_sigma": (
        NON_NEGATIVE,
        "lognormal sigma of artist popularity",
    ),
    "track_popularity_sigma": (
        NON_NEGATIVE,
        "lognormal sigma of a track's popularity within its artist",
    ),
    "popularity_alignment": (
        REAL,
        "shift along the shared mainstream direction per standard deviation of log popularity",
    ),
    "popularity_offset": (
        REAL,
        "standardized log popularity at which a track has no mainstream shift: less popular tracks "
        "lean away from the mainstream that popular tracks (and so most interests) lean into",
    ),
    "interests": (
        COUNT,
        "interests per user, drawn with probability proportional to track popularity ** interest_popularity_exponent",
    ),
    "interest_popularity_exponent": (
        NON_NEGATIVE,
        "how strongly interests follow popularity (1 = proportional, 0 = uniform; fitted "
        "to how often the course's users share an interest)",
    ),
}
KNOB_HELP = {name: text for name, (_, text) in KNOB_SPECS.items()}
KNOB_KINDS = {name: kind for name, (kind, _) in KNOB_SPECS.items()}
KNOBS: tuple[str, ...] = tuple(KNOB_SPECS)
INTEGER_KNOBS = frozenset(name for name, kind in KNOB_KINDS.items() if kind in INTEGER_KINDS)


# The listening source's knobs (params.yaml `world: listening:`), the same way.
LISTENING_KNOB_SPECS: dict[str, tuple[str, str]] = {
    "listeners": (COUNT, "listeners in the synthetic history"),
    "communities": (COUNT, "taste communities; each artist belongs to one"),
    "community_zipf": (NON_NEGATIVE, "Zipf exponent of community sizes"),
    "communities_per_listener": (COUNT, "a listener holds 1 to this many communities (uniformly)"),
    "songs_log_mean": (
        REAL,
        "a listener's distinct songs ~ lognormal(songs_log_mean, songs_log_sigma), clipped to [songs_min, songs_max]",
    ),
    "songs_log_sigma": (NON_NEGATIVE, "lognormal sigma of a listener's distinct songs"),
    "songs_min": (COUNT, "fewest songs of a listener (the Taste Profile kept users with at least 5)"),
    "songs_max": (COUNT, "most songs of a listener"),
    "mainstream_share": (
        SHARE,
        "share of a listener's songs drawn from the whole catalog by popularity, not their communities",
    ),
    "mainstream_dispersion": (
        SHARE,
        "how much listeners differ in that share: its variance as a share of the most a listener's share can vary"
        " (0: every listener the same; near 1: each listener all mainstream or none), a Beta draw per listener",
    ),
    "artist_follow_share": (SHARE, "share of the artists a listener heard whose other songs they also take"),
    "artist_follow_songs": (COUNT, "songs (by popularity, repeats merged) taken from each followed artist"),
    "interest_listen_exponent": (
        NON_NEGATIVE,
        "the users' interests are drawn among the tracks someone listened to, in proportion to a track's listeners"
        " ** this times its popularity ** interest_popularity_exponent",
    ),
    "interest_popularity_exponent": (
        NON_NEGATIVE,
        "see interest_listen_exponent; a track's popularity is its artist's times its own, the weight listeners draw"
        " songs by (0: interests by listeners alone, the course's listen counts)",
    ),
    "components": (COUNT, "LightFM no_components: the hidden embeddings' dimension (the course: 100)"),
    "epochs": (COUNT, "LightFM WARP epochs"),
    "learning_rate": (
        POSITIVE,
        "LightFM learning rate (the course: 0.01, over 100 epochs of about 48 million plays; a smaller history needs"
        " a larger one for factors as converged)",
    ),
    "max_sampled": (COUNT, "LightFM WARP max_sampled (the course: 100)"),
    "scale": (POSITIVE, "the item factors are multiplied by this before the simulated users score them"),
}
LISTENING_KNOB_HELP = {name: text for name, (_, text) in LISTENING_KNOB_SPECS.items()}
LISTENING_KNOB_KINDS = {name: kind for name, (kind, _) in LISTENING_KNOB_SPECS.items()}
LISTENING_KNOBS: tuple[str, ...] = tuple(LISTENING_KNOB_HELP)
LISTENING_INTEGER_KNOBS = frozenset(name for name, kind in LISTENING_KNOB_KINDS.items() if kind in INTEGER_KINDS)


def generator_arguments(section: dict) -> dict:
    """The `world:` section as keyword arguments of the generators: the sizes under their argument names first,
    then every knob; the source keys left out."""
    arguments = {argument: section[key] for key, (argument, _, _) in SIZE_SETTINGS.items()}
    arguments.update(
        (name, value) for name, value in section.items() if name not in SIZE_SETTINGS and name not in SOURCE_KEYS
    )
    return arguments
