"""Benchmark the botify service: startup with a 50,000-track catalog, /next req/s over kept-alive connections
(one worker), p50/p99 latency and memory. Prints one JSON object.

    .venv/bin/python bench/service_throughput.py [--seconds 10] [--connections 16] [--tracks 50000]

Load comes from wrk when it is on PATH (apt install wrk), else from a raw-socket keep-alive Python client running
in separate processes. Targets: startup < 1 s, >= 3,000 req/s, p99 < 5 ms, RSS < 100 MB. The service
is granian's supervisor plus one forked worker: rss_mb/peak_rss_mb are the worker's, service_pss_mb both together.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import orjson
import psutil

from botify.launch import served

USERS = 10_000


def make_world(folder: Path, n_tracks: int, seed: int) -> None:
    """The simulator's world when `python -m sim world` runs, else a catalog of the same shape written here."""
    result = subprocess.run(
        [sys.executable, "-m", "sim", "world", "--out", str(folder), "--seed", str(seed), "--tracks", str(n_tracks)],
        capture_output=True,
    )
    if result.returncode != 0:
        rng = random.Random(seed)
        rows = (
            {"artist": f"artist {rng.randrange(n_tracks // 4)}", "title": f"title {track}", "track": track}
            for track in range(n_tracks)
        )
        (folder / "tracks.json").write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    top = random.Random(seed).sample(range(n_tracks), 1000)
    (folder / "top_tracks.json").write_bytes(orjson.dumps(top))


def write_config(folder: Path) -> Path:
    arms = [{"recommender": "random"}] + [
        {"recommender": "toppop", "path": "top_tracks.json", "k": k} for k in (10, 100, 1000)
    ]
    config = folder / "botify.yaml"
    config.write_text(
        json.dumps(
            {"catalog": "tracks.json", "log_dir": "log", "seed": 1, "experiments": [{"name": "TOP_POP", "arms": arms}]}
        )
    )
    return config


def measure_startup(config: Path, runs: int) -> list[float]:
    """Seconds from process start until GET / answers."""
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        with served(config):
            timings.append(time.perf_counter() - started)
    return timings


def request_bytes(host: str, port: int, user: int, track: int) -> bytes:
    body = b'{"track": %d, "time": 0.5}' % track
    return (
        b"POST /next/%d HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (user, host.encode(), port, len(body), body)
    )


def client_process(host: str, port: int, connections: int, seconds: float, seed: int, results) -> None:
    """Blocking keep-alive loops, one thread per connection; records each request's latency."""
    import threading

    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def connection_loop(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        own: list[float] = []
        with socket.create_connection((host, port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buffer = b""
            while time.perf_counter() < deadline:
                payload = request_bytes(host, port, rng.randrange(USERS), rng.randrange(50_000))
                sent = time.perf_counter()
                sock.sendall(payload)
                while True:
                    head_end = buffer.find(b"\r\n\r\n")
                    if head_end >= 0:
                        length = int(re.search(rb"(?i)content-length: *(\d+)", buffer[:head_end]).group(1))
                        if len(buffer) >= head_end + 4 + length:
                            if not buffer.startswith(b"HTTP/1.1 200"):
                                raise RuntimeError(buffer[:200])
                            buffer = buffer[head_end + 4 + length :]
                            break
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise RuntimeError("server closed the connection")
                    buffer += chunk
                own.append(time.perf_counter() - sent)
        with lock:
            latencies.extend(own)

    threads = [threading.Thread(target=connection_loop, args=(index,)) for index in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(latencies)


def python_load(url: str, connections: int, seconds: float) -> dict:
    parsed = urlparse(url)
    processes_count = 2
    per_process = max(1, connections // processes_count)
    results = multiprocessing.Queue()
    processes = [
        multiprocessing.Process(
            target=client_process, args=(parsed.hostname, parsed.port, per_process, seconds, index, results)
        )
        for index in range(processes_count)
    ]
    started = time.perf_counter()
    for process in processes:
        process.start()
    latencies = np.concatenate([np.asarray(results.get(timeout=seconds + 60)) for _ in processes])
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - started
    return {
        "load_generator": f"python raw sockets, {processes_count} processes x {per_process} connections",
        "requests": int(latencies.size),
        "req_per_s": round(latencies.size / elapsed, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 3),
        "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 3),
    }


WRK_SCRIPT = """
counter = 0
request = function()
  counter = counter + 1
  local user = (counter * 7919) % USERS
  local body = '{"track": ' .. ((counter * 104729) % 50000) .. ', "time": 0.5}'
  return wrk.format("POST", "/next/" .. user, {["Content-Type"] = "application/json"}, body)
end
"""


def wrk_load(url: str, connections: int, seconds: float, scratch: Path) -> dict:
    script = scratch / "next.lua"
    script.write_text(WRK_SCRIPT.replace("USERS", str(USERS)))
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def milliseconds(label: str) -> float:
        value, unit = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", output).groups()
        return round(float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], 3)

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "load_generator": f"wrk -t1 -c{connections}",
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
        "req_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50_ms": milliseconds("50"),
        "p99_ms": milliseconds("99"),
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--tracks", type=int, default=50_000)
    parser.add_argument("--startup-runs", type=int, default=3)
    parser.add_argument("--python-client", action="store_true", help="use the Python client even if wrk exists")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]  # other work on the machine skews every figure below
    with tempfile.TemporaryDirectory(prefix="botify-bench-") as scratch_name:
        scratch = Path(scratch_name)
        make_world(scratch, args.tracks, seed=1)
        config = write_config(scratch)
        startups = measure_startup(config, args.startup_runs)
        with served(config) as url:
            supervisor = psutil.Process().children()[-1]
            worker = supervisor.children()[-1]  # the forked process that serves the requests
            if shutil.which("wrk") and not args.python_client:
                load = wrk_load(url, args.connections, args.seconds, scratch)
            else:
                load = python_load(url, args.connections, args.seconds)
            rss_mb = worker.memory_info().rss / 2**20
            peak_mb = (
                int(re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{worker.pid}/status").read_text()).group(1)) / 1024
            )
            supervisor_rss_mb = supervisor.memory_info().rss / 2**20
            # The worker shares the supervisor's pages copy-on-write; PSS splits those, so the sum is what both use.
            service_pss_mb = sum(process.memory_full_info().pss for process in (supervisor, worker)) / 2**20
        logged_lines = sum(1 for _ in (scratch / "log" / "data.json").open("rb"))
    print(
        json.dumps(
            {
                "tracks": args.tracks,
                "startup_s_median": round(statistics.median(startups), 3),
                "startup_s_runs": [round(value, 3) for value in startups],
                "workers": 1,
                "connections": args.connections,
                "seconds": args.seconds,
                **load,
                "logged_lines": logged_lines,
                "rss_mb": round(rss_mb, 1),
                "peak_rss_mb": round(peak_mb, 1),
                "supervisor_rss_mb": round(supervisor_rss_mb, 1),
                "service_pss_mb": round(service_pss_mb, 1),
                "cpu_count": psutil.cpu_count(),
                "load_average_before": round(load_before, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
