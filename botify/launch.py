"""Run the real service as a subprocess for tests and pipelines, and always stop it."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

URL_PATTERN = re.compile(r"serving at (http://\S+)")
LOOPBACK_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never route loopback via a proxy


def free_loopback_port() -> int:
    """A port the kernel just handed out on loopback, for a server (Redis, say) that cannot pick its own."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceFailed(RuntimeError):
    """The service exited or never answered; carries its output so the cause is visible."""


@contextlib.contextmanager
def served(
    config_path: str | Path,
    *,
    workers: int = 1,
    port: int = 0,
    startup_timeout: float = 30.0,
    reset_counters: bool = False,
    output: str | Path | None = None,
    entry_point: Sequence[str] = ("-m", "botify"),
) -> Iterator[str]:
    """Yield the base URL ("http://127.0.0.1:PORT") of `python -m botify serve` once GET / answers.

    The service's stdout and stderr go to `output` when given (kept after the service stops), else to a
    temporary file shown in the error when it fails to start. `entry_point` (the interpreter's arguments before
    `serve`) lets a fault test start the CLI through a script that injects the fault first.
    """
    command = [
        sys.executable,
        *entry_point,
        "serve",
        "--config",
        str(config_path),
        "--port",
        str(port),
        "--workers",
        str(workers),
    ] + (["--reset-counters"] if reset_counters else [])
    with tempfile.TemporaryDirectory(prefix="botify-") as scratch:
        output_path = Path(output) if output is not None else Path(scratch) / "output.txt"
        with output_path.open("wb") as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            yield _wait_until_alive(process, output_path, startup_timeout)
        finally:
            stop(process)


def stop(process: subprocess.Popen, timeout: float = 15.0) -> int:
    """SIGTERM (a clean stop that finishes requests in flight), then SIGKILL if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def _read_output(output_path: Path) -> str:
    return output_path.read_bytes().decode(errors="replace")


def _wait_until_alive(process: subprocess.Popen, output: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceFailed(f"botify exited with code {process.returncode}:\n{_read_output(output)}")
        if url is None:
            match = URL_PATTERN.search(_read_output(output))
            url = match.group(1) if match else None
        if url is not None:
            try:
                with LOOPBACK_OPENER.open(f"{url}/", timeout=2) as response:
                    if response.status == 200:
                        return url
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
        time.sleep(0.02)
    raise ServiceFailed(f"botify did not answer GET / within {timeout} s:\n{_read_output(output)}")
