"""Stage `recommender@<name>`: a recommender of one's own (params.yaml `recommenders:`) checked and recorded.

DVC tracks the class's file through this stage (its dependency in dvc.yaml), wherever the file lies: the record,
`build/recs/<name>.recommender.json`, holds the file's hash, so editing the file reruns the leaderboard and the
homework's test that serve it. The check imports the class and binds its `params` and `data` to its constructor, so
a typo fails here, in one line naming the file, before any traffic is served.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import sys
from pathlib import Path

from botify.config import ConfigError
from botify.custom import load_class
from botify_lab.pipeline import layout
from botify_lab.pipeline.outputs import write_json
from botify_lab.pipeline.params import PARAMS_FILE, Params, load_params


def check_recommender(name: str, params: Params) -> dict:
    """The record of recommender `name`; ConfigError (one line) when its class cannot serve."""
    if name not in params.recommenders:
        have = ", ".join(params.recommenders) or "none"
        raise ConfigError(f"no recommender {name!r} in params.yaml `recommenders:` (have {have})")
    spec = params.recommenders[name]
    where = f"recommenders.{name}"
    file = Path(spec.file)
    if not file.is_file():
        raise ConfigError(f"{where}: no recommender file {file}")
    recommender = load_class(file.resolve(), spec.class_name, where)
    arguments = {**spec.params, **{key: Path(path) for key, path in spec.data.items()}}
    try:
        inspect.signature(recommender).bind(**arguments)
    except TypeError as error:
        given = ", ".join(sorted(arguments)) or "no arguments"
        raise ConfigError(f"{where}: {file}: {spec.class_name}({given}): {error}") from None
    return {
        "name": name,
        "label": spec.label,
        "file": spec.file,
        "sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
        "class": spec.class_name,
        "params": dict(spec.params),
        "data": dict(spec.data),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="the recommender: a key of params.yaml's `recommenders:`")
    parser.add_argument("--params", default=PARAMS_FILE, type=Path)
    args = parser.parse_args(argv)
    try:
        record = check_recommender(args.name, load_params(args.params))
    except ConfigError as error:
        print(f"recommender: {error}", file=sys.stderr)
        return 2
    write_json(layout.recommender_record(args.name), record, sort_keys=True)
    print(f"recommender: {args.name} is {record['class']} of {record['file']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
