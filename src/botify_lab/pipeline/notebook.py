"""Run a notebook with papermill so that its executed copy appears only when every cell succeeded.

papermill writes the output notebook even when a cell fails; a DVC stage must not leave that behind as if it were
its output. The failed copy is kept in `<output folder>-failed/` for debugging, outside the stage's outputs.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_notebook(source: Path, output: Path, papermill_args: list[str]) -> int:
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    failed = output.parent.with_name(f"{output.parent.name}-failed") / output.name
    env = {**os.environ, "JUPYTER_PREFER_ENV_PATH": "1", "MPLBACKEND": "Agg"}
    command = [sys.executable, "-m", "papermill", str(source), str(partial), "-k", "python3", *papermill_args]
    returncode = subprocess.run(command, env=env).returncode
    if returncode == 0:
        partial.replace(output)
        failed.unlink(missing_ok=True)
    else:
        output.unlink(missing_ok=True)
        if partial.exists():
            failed.parent.mkdir(parents=True, exist_ok=True)
            partial.replace(failed)
            print(f"notebook failed; the executed copy is kept at {failed}", file=sys.stderr)
    return returncode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] in {"-h", "--help"}:
        print("usage: python -m botify_lab.pipeline.notebook SOURCE.ipynb OUTPUT.ipynb [papermill options, e.g. -p name value]")
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    return run_notebook(Path(argv[0]), Path(argv[1]), argv[2:])


if __name__ == "__main__":
    sys.exit(main())
