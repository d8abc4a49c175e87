"""Run a notebook with papermill so that its executed copy appears only when every cell succeeded.

papermill writes the output notebook even when a cell fails; a DVC stage must not leave that behind as if it were
its output. The failed copy is kept in `<output folder>-failed/` for debugging, outside the stage's outputs. The
run is quiet: progress bars are off inside the kernel (they would fill the report pages), figures are embedded
inline, and papermill's own chatter is dropped; on failure the error itself is printed, not 80 lines of frames.
The executed copy keeps no timing (papermill's and the kernel's per-cell clocks), no random cell or table id and no
memory address, so the same inputs give the same file and DVC the same hash on every run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat

# Lines papermill and the kernel print on every run, which nobody can act on.
NOISE = (
    "Input Notebook:",
    "Output Notebook:",
    "Executing notebook with kernel",
    "Kernel is running over TCP without encryption",
    "Black is not installed",
)


# When papermill and the kernel ran each cell: true of this run only, so left out of the executed copy.
TIMING_KEYS = ("start_time", "end_time", "duration")
INJECTED_TAG = "injected-parameters"
# A pandas Styler names its table with a random id (`<table id="T_1a2b3">`, and every cell's id and CSS rule after
# it); IPython shows an object without a text form by its memory address (`<pandas...Styler at 0x7f...>`).
STYLER_TABLE_ID = re.compile(r'<table id="T_([0-9a-f]+)"')
DEFAULT_REPR = re.compile(r"<[\w.]+ (object )?at 0x[0-9a-f]+>")


def _steady_output(output, name: str) -> None:
    """One display's data without its random parts: Styler table ids become `name`, a bare address repr goes
    when the display has another form."""
    data = output.get("data", {})
    html = "".join(data.get("text/html", ""))
    for random_id in dict.fromkeys(STYLER_TABLE_ID.findall(html)):
        html = html.replace(f"T_{random_id}", f"T_{name}")
        data["text/html"] = html
    if len(data) > 1 and DEFAULT_REPR.fullmatch("".join(data.get("text/plain", "")).strip()):
        del data["text/plain"]


def drop_run_details(path: Path) -> None:
    """Remove what differs between runs of the same notebook: the run's clock readings, the random id of the
    parameters cell papermill injects, random table ids and memory addresses in outputs (the rest stays)."""
    notebook = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    for index, cell in enumerate(notebook.cells):
        if INJECTED_TAG in cell.metadata.get("tags", []):
            cell.id = INJECTED_TAG  # papermill gives the cell it adds a random id
        for position, output in enumerate(cell.get("outputs", [])):
            _steady_output(output, f"cell{index}_{position}")
    for metadata in [notebook.metadata, *(cell.metadata for cell in notebook.cells)]:
        metadata.pop("execution", None)
        for key in TIMING_KEYS:
            metadata.get("papermill", {}).pop(key, None)
    nbformat.write(notebook, path)


def error_summary(stderr: str) -> str:
    """The part of papermill's stderr that explains a failure: the cell's exception, without the CLI's frames."""
    marker = "papermill.exceptions.PapermillExecutionError:"
    if marker in stderr:
        return stderr[stderr.index(marker) + len(marker) :].strip()
    return "\n".join(line for line in stderr.splitlines() if not any(noise in line for noise in NOISE)).strip()


def run_notebook(source: Path, output: Path, papermill_args: list[str]) -> int:
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.stem}.partial.ipynb")
    failed = output.parent.with_name(f"{output.parent.name}-failed") / output.name
    # tqdm.auto (imported by optuna and others) warns that it cannot draw notebook widgets: bars are off anyway.
    env = {
        **os.environ,
        "JUPYTER_PREFER_ENV_PATH": "1",
        "TQDM_DISABLE": "1",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "PYTHONWARNINGS": "ignore:IProgress not found",
    }
    env.pop("MPLBACKEND", None)  # the kernel's inline backend embeds every figure in the notebook
    command = [
        sys.executable,
        "-m",
        "papermill",
        str(source),
        str(partial),
        "-k",
        "python3",
        "--no-progress-bar",
        *papermill_args,
    ]
    completed = subprocess.run(command, env=env, capture_output=True, text=True)
    if completed.returncode == 0:
        drop_run_details(partial)
        partial.replace(output)
        failed.unlink(missing_ok=True)
        return 0
    output.unlink(missing_ok=True)
    print(f"{source} failed:\n{error_summary(completed.stderr)}", file=sys.stderr)
    if partial.exists():
        failed.parent.mkdir(parents=True, exist_ok=True)
        partial.replace(failed)
        print(f"the executed copy is kept at {failed}", file=sys.stderr)
    return completed.returncode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] in {"-h", "--help"}:
        print(
            "usage: python -m botify_lab.pipeline.notebook SOURCE.ipynb OUTPUT.ipynb [papermill options, e.g. "
            "-p model_name ours]\n\nRuns the notebook with papermill; OUTPUT appears only when every cell ran."
        )
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    return run_notebook(Path(argv[0]), Path(argv[1]), argv[2:])


if __name__ == "__main__":
    sys.exit(main())
