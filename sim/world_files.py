"""Writing a world folder, whichever source made its numbers: the artists' names and the tracks' titles drawn from
the seed, then tracks.json, users.json and tracks.npy, and world.json (their hashes) last, each file atomically."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import orjson

from botify_lab.formats import CATALOG_KEYS, atomic_write_bytes
from sim.draws import NAMES, sub_generator
from sim.world import DATA_FILES

FORMAT_VERSION = 1

_SYLLABLES = (
    "ka ri mo la ven tor sa mi lu na del ro be cal fin gar ho ja kel lin mar nor pe qui ras sel tan ul vi wen "
    "xa yor zan bri cor dra fel gro hal jor kra lom mur nev ost pra quen rin sto tre vol wyn zel"
).split()


_WORDS = (
    "love night heart fire river dream blue golden light shadow rain summer winter city road home moon sun star "
    "ocean wild silver broken dance sweet lonely midnight morning song blood stone glass paper electric velvet "
    "thunder echo mirror garden desert highway angel ghost crazy little last first lost forever tonight yesterday "
    "tomorrow heaven storm honey ice smoke wind kingdom tears fever candy rose black white red green empty falling "
    "rising running burning shining dancing waiting calling hold feel come back down away alone together again "
    "never always slow fast high low deep cold warm free young old secret hidden true wonder magic island "
    "train window letter diamond sugar spirit fortune velvet circus harbor neon satellite radio cinema"
).split()


_BAND_NOUNS = (
    "wolves lights kings rivers machines saints strangers ghosts birds engines shadows sparks comets tigers "
    "sailors pilots echoes giants dreamers rebels"
).split()


def _phrases(rng: np.random.Generator, lengths: np.ndarray, vocabulary: list[str], separator: str) -> list[str]:
    """One phrase per length, each of that many pieces drawn uniformly from `vocabulary`."""
    picks = rng.integers(0, len(vocabulary), size=int(lengths.sum()))
    phrases, at = [], 0
    for length in lengths:
        phrases.append(separator.join(vocabulary[i] for i in picks[at : at + length]))
        at += length
    return phrases


def _word(rng: np.random.Generator, count: int, syllables: tuple[int, int]) -> list[str]:
    lengths = rng.integers(syllables[0], syllables[1] + 1, size=count)
    return [word.capitalize() for word in _phrases(rng, lengths, _SYLLABLES, "")]


def artist_names(rng: np.random.Generator, count: int) -> list[str]:
    """Readable, distinct names: "First Last", "The <Adjective> <Nouns>", or one stage name."""
    kinds = rng.choice(3, size=count, p=[0.6, 0.25, 0.15])
    firsts, lasts, stage = _word(rng, count, (2, 3)), _word(rng, count, (2, 3)), _word(rng, count, (2, 4))
    adjectives = rng.integers(0, len(_WORDS), size=count)
    nouns = rng.integers(0, len(_BAND_NOUNS), size=count)
    names, seen = [], set()
    for i in range(count):
        if kinds[i] == 0:
            name = f"{firsts[i]} {lasts[i]}"
        elif kinds[i] == 1:
            name = f"The {_WORDS[adjectives[i]].capitalize()} {_BAND_NOUNS[nouns[i]].capitalize()}"
        else:
            name = stage[i]
        while name in seen:  # artists are told apart by name in the catalog, so names must be unique
            name = f"{name} {lasts[(i + len(seen)) % count]}"
        seen.add(name)
        names.append(name)
    return names


def titles(rng: np.random.Generator, count: int) -> list[str]:
    lengths = rng.choice(np.array([1, 2, 3, 4]), size=count, p=[0.25, 0.4, 0.25, 0.1])
    return [title.title() for title in _phrases(rng, lengths, _WORDS, " ")]


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def content_hash(file_hashes: dict[str, str]) -> str:
    """One hash of a world's data files (world.json's `content_sha256`)."""
    return hashlib.sha256("".join(f"{name}:{file_hashes[name]}\n" for name in DATA_FILES).encode()).hexdigest()


def write_world(out_dir: str | os.PathLike, arrays: dict, *, seed: int, generator: str, parameters: dict, stats: dict):
    """Write a generated world's files (names and titles drawn from `seed`) and world.json last; return world.json's
    content. `arrays` holds the embeddings, each track's artist and the users (`world_arrays`' keys)."""
    embeddings, track_artist = arrays["embeddings"], arrays["track_artist"]
    interests, consume_bias, consume_sharpness = (
        arrays["interests"],
        arrays["consume_bias"],
        arrays["consume_sharpness"],
    )
    n_tracks, n_users = len(track_artist), len(interests)
    names_rng = sub_generator(seed, NAMES)
    artist_of_id = artist_names(names_rng, int(track_artist.max()) + 1)
    track_titles = titles(names_rng, n_tracks)

    tracks_json = b"".join(
        orjson.dumps(dict(zip(CATALOG_KEYS, (artist_of_id[track_artist[i]], track_titles[i], i)))) + b"\n"
        for i in range(n_tracks)
    )
    users_json = b"".join(
        orjson.dumps(
            {
                "user": u,
                "interests": interests[u].tolist(),
                "consume_bias": float(consume_bias[u]),
                "consume_sharpness": float(consume_sharpness[u]),
            }
        )
        + b"\n"
        for u in range(n_users)
    )
    payloads = {"tracks.json": tracks_json, "users.json": users_json, "tracks.npy": npy_bytes(embeddings)}
    return write_world_files(out_dir, payloads, generator=generator, parameters=parameters, stats=stats)


def write_world_files(
    out_dir: str | os.PathLike, payloads: dict[str, bytes], *, generator: str, parameters: dict, stats: dict
):
    """Write the data files (tracks.json, users.json, tracks.npy) and world.json with their hashes last; a folder
    whose world.json exists is complete. Returns world.json's content."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stale_meta = out / "world.json"
    if stale_meta.exists():
        stale_meta.unlink()  # until the new data files are all in place, the folder must not claim to be complete
    for name, payload in payloads.items():
        atomic_write_bytes(out / name, payload)
    meta = {
        "format": FORMAT_VERSION,
        "generator": generator,
        "parameters": parameters,
        "stats": stats,
        "files": {name: hashlib.sha256(payload).hexdigest() for name, payload in payloads.items()},
    }
    meta["content_sha256"] = content_hash(meta["files"])
    atomic_write_bytes(out / "world.json", orjson.dumps(meta, option=orjson.OPT_INDENT_2) + b"\n")
    return meta
