"""Run a notebook with papermill so that its executed copy appears only when every cell succeeded.

papermill writes the output notebook even when a cell fails; a DVC stage must not leave that behind as if it were
its output. The failed copy is kept in `<output folder>-failed/` for debugging, outside the stage's outputs. The
run is quiet: progress bars are off inside the kernel (they would fill the report pages), figures are embedded
inline, and papermill's own chatter is dropped; on failure the error itself is printed, not 80 lines of frames.
The executed copy keeps no timing (papermill's and the kernel's per-cell clocks), no random cell or table id and no
memory address, so the same inputs give the same file and DVC the same hash on every run.
"""

from __future__ import annotations

import contextlib
import os
import re
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


def parameter_value(text: str):
    """A `-p NAME VALUE` value typed as papermill's command line types it: True, False, None, a number, or text."""
    constants = {"True": True, "False": False, "None": None}
    if text in constants:
        return constants[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_parameters(arguments: list[str]) -> dict:
    """`-p NAME VALUE` pairs (papermill's own spelling, which dvc.yaml's commands use) as a dict."""
    parameters = {}
    rest = list(arguments)
    while rest:
        if rest[0] not in {"-p", "--parameters"} or len(rest) < 3:
            raise ValueError(f"expected -p NAME VALUE, got {' '.join(rest)!r}")
        parameters[rest[1]] = parameter_value(rest[2])
        rest = rest[3:]
    return parameters


@contextlib.contextmanager
def kernel_environment():
    """The environment the kernel starts with: progress bars off, the inline backend, the venv's kernelspec. The
    kernel copies os.environ when it starts, so it is set for the run and restored after (tests call in process)."""
    saved = dict(os.environ)
    # tqdm.auto (imported by optuna and others) warns that it cannot draw notebook widgets: bars are off anyway.
    os.environ.update(
        JUPYTER_PREFER_ENV_PATH="1",
        TQDM_DISABLE="1",
        PYDEVD_DISABLE_FILE_VALIDATION="1",
        PYTHONWARNINGS="ignore:IProgress not found",
    )
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend embeds every figure in the notebook
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def stderr_captured(into: Path):
    """Everything written to this process's stderr, the kernel's included (it inherits the descriptor), goes to a
    file: the kernel's start-up warnings on every run are noise, and a failure is reported from the exception."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(into, "wb") as handle:
        os.dup2(handle.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def execute(source: Path, partial: Path, parameters: dict) -> None:
    """papermill in this process (no second interpreter to start). The kernel is killed once the last cell has
    answered: every output is written by then, and a graceful shutdown only waits about a second and a half for the
    interpreter to tear down what the notebook imported."""
    import papermill

    with kernel_environment():
        papermill.execute_notebook(
            str(source),
            str(partial),
            parameters=parameters,
            kernel_name="python3",
            progress_bar=False,
            shutdown_kernel="immediate",
        )


def error_summary(problem: Exception, stderr: str) -> str:
    """What explains a failure: the failing cell's exception as papermill reports it, or else the error and what the
    run printed to stderr, without the lines every run prints."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(problem, PapermillExecutionError):
        return str(problem).strip()
    printed = "\n".join(line for line in stderr.splitlines() if not any(noise in line for noise in NOISE)).strip()
    return "\n".join(part for part in (printed, f"{type(problem).__name__}: {problem}") if part)


def run_notebook(source: Path, output: Path, parameters: dict) -> int:
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.stem}.partial.ipynb")
    failed = output.parent.with_name(f"{output.parent.name}-failed") / output.name
    stderr = output.with_name(f".{output.stem}.stderr")
    try:
        with stderr_captured(stderr):
            execute(source, partial, parameters)
    except Exception as problem:  # any failure, the notebook's or papermill's, is reported in a few lines
        output.unlink(missing_ok=True)
        print(f"{source} failed:\n{error_summary(problem, stderr.read_text(errors='replace'))}", file=sys.stderr)
        if partial.exists():
            failed.parent.mkdir(parents=True, exist_ok=True)
            partial.replace(failed)
            print(f"the executed copy is kept at {failed}", file=sys.stderr)
        return 1
    finally:
        stderr.unlink(missing_ok=True)
    drop_run_details(partial)
    partial.replace(output)
    failed.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] in {"-h", "--help"}:
        print(
            "usage: python -m botify_lab.pipeline.notebook SOURCE.ipynb OUTPUT.ipynb [-p NAME VALUE ...]\n\n"
            "Runs the notebook with papermill, each -p setting a variable of its parameters cell (True, False, None\n"
            "and numbers typed as papermill types them); OUTPUT appears only when every cell ran."
        )
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    try:
        parameters = parse_parameters(argv[2:])
    except ValueError as problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    return run_notebook(Path(argv[0]), Path(argv[1]), parameters)


if __name__ == "__main__":
    sys.exit(main())
