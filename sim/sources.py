"""Building a world of any source (`world.source`): the tree generator, the factorized listening history, or the
course's own catalog and users. `python -m sim world` and the pipeline's bootstrap both build through here."""

from __future__ import annotations


def build_world(out_dir, source: str, arguments: dict, *, listening: dict | None = None, course_catalog=None) -> dict:
    """Write the world of `source` into `out_dir` from `generator_arguments`' output (and the listening knobs, or
    the course's catalog folder); returns its world.json content."""
    arguments = dict(arguments)
    seed, n_tracks, n_users = arguments.pop("seed"), arguments.pop("n_tracks"), arguments.pop("n_users")
    if source == "listening":
        from sim.listening import listening_world

        return listening_world(
            out_dir, seed=seed, n_tracks=n_tracks, n_users=n_users, shared=arguments, listening=listening
        )
    if source == "course":  # the course's files fix the catalog and the users
        from sim.generator import course_world

        return course_world(course_catalog, out_dir, seed=seed, **arguments)
    from sim.generator import generate_world

    return generate_world(out_dir, seed=seed, n_tracks=n_tracks, n_users=n_users, **arguments)
