"""Load figures for the botify service: N requests (default 1,000,000; 9 /next to 1 /last) over kept-alive
connections, then req/s, p50/p99 latency, and how many complete log lines each 2xx answer left (exactly 1.0 when
nothing is lost or duplicated). Prints one JSON object.

    .venv/bin/python bench/service_load.py [--requests 1000000] [--connections 16] [--workers 1] [--tracks 50000]

Load comes from wrk when it is on PATH (apt-get install wrk), each wrk thread stopping after its share of the
requests, else from a raw-socket keep-alive Python client in separate processes. With --workers above 1 the
service needs Redis: a private redis-server is started on a free loopback port (redis-server must be on PATH).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from botify.launch import free_loopback_port, served

HERE = Path(__file__).resolve().parent
USERS = 10_000
LAST_EVERY = 10  # every 10th request is a /last


def _throughput_module():
    """bench/service_throughput.py (not a package): its world builder and config writer."""
    spec = importlib.util.spec_from_file_location("service_throughput", HERE / "service_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def start_redis() -> tuple[subprocess.Popen, str]:
    executable = shutil.which("redis-server")
    if executable is None:
        sys.exit("service_load: --workers > 1 needs redis-server on PATH")
    port = free_loopback_port()
    process = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.025)
    process.kill()
    sys.exit("service_load: redis-server did not start")


WRK_SCRIPT = """
local counter = 0
local answered = 0
local limit = LIMIT
setup = function(thread)
  thread:set("offset", THREAD_COUNTER)
  THREAD_COUNTER = THREAD_COUNTER + 1
end
THREAD_COUNTER = 0
request = function()
  counter = counter + 1
  local n = counter * 64 + offset
  local user = (n * 7919) % USERS
  local body = '{"track": ' .. ((n * 104729) % TRACKS) .. ', "time": 0.5}'
  local message = (counter % LAST_EVERY == 0) and "last" or "next"
  return wrk.format("POST", "/" .. message .. "/" .. user, {["Content-Type"] = "application/json"}, body)
end
response = function(status, headers, body)
  answered = answered + 1
  if answered == limit then
    local flag = io.open("DONE_DIR/" .. tostring(offset), "w")
    flag:close()
    wrk.thread:stop()
  end
end
done = function(summary, latency, requests)
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "non_2xx": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def wrk_load(url: str, requests: int, connections: int, tracks: int, scratch: Path) -> dict:
    """wrk threads each stop after their share; wrk itself waits out -d, so it is interrupted (SIGINT makes it
    report) as soon as every thread has flagged its end in DONE_DIR."""
    threads = min(2, connections)
    done_dir = scratch / "wrk-done"
    done_dir.mkdir()
    script = scratch / "load.lua"
    script.write_text(
        WRK_SCRIPT.replace("LIMIT", str(-(-requests // threads)))
        .replace("USERS", str(USERS))
        .replace("TRACKS", str(tracks))
        .replace("LAST_EVERY", str(LAST_EVERY))
        .replace("DONE_DIR", str(done_dir))
    )
    process = subprocess.Popen(
        ["wrk", f"-t{threads}", f"-c{connections}", "-d3600s", "--timeout", "10s", "-s", str(script), url],
        stdout=subprocess.PIPE,
        text=True,
    )
    while process.poll() is None and len(list(done_dir.iterdir())) < threads:
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    result = json.loads(re.search(r"RESULT (\{.*\})", output).group(1))
    seconds = result["duration_us"] / 1e6
    return {
        "load_generator": f"wrk -t{threads} -c{connections}",
        "requests": result["requests"],
        "non_2xx": result["non_2xx"],
        "socket_errors": result["connect_errors"] + result["read_errors"] + result["write_errors"] + result["timeouts"],
        "seconds": round(seconds, 2),
        "req_per_s": round(result["requests"] / seconds, 1),
        "p50_ms": round(result["p50_us"] / 1000, 3),
        "p99_ms": round(result["p99_us"] / 1000, 3),
        "max_ms": round(result["max_us"] / 1000, 3),
    }


def _client(host: str, port: int, count: int, seed: int, tracks: int, results) -> None:
    """One keep-alive connection sending `count` requests; reports (latencies, non-2xx count)."""
    latencies = np.empty(count)
    non_2xx = 0
    with socket.create_connection((host, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = b""
        for index in range(count):
            n = index * 64 + seed
            message = b"last" if (index + 1) % LAST_EVERY == 0 else b"next"
            body = b'{"track": %d, "time": 0.5}' % ((n * 104729) % tracks)
            payload = (
                b"POST /%s/%d HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (message, (n * 7919) % USERS, host.encode(), len(body), body)
            )
            sent = time.perf_counter()
            sock.sendall(payload)
            while True:
                head_end = buffer.find(b"\r\n\r\n")
                if head_end >= 0:
                    length = int(re.search(rb"(?i)content-length: *(\d+)", buffer[:head_end]).group(1))
                    if len(buffer) >= head_end + 4 + length:
                        non_2xx += not buffer.startswith(b"HTTP/1.1 2")
                        buffer = buffer[head_end + 4 + length :]
                        break
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("server closed the connection")
                buffer += chunk
            latencies[index] = time.perf_counter() - sent
    results.put((latencies, non_2xx))


def python_load(url: str, requests: int, connections: int, tracks: int) -> dict:
    parsed = urlparse(url)
    share = -(-requests // connections)
    results = multiprocessing.Queue()
    processes = [
        multiprocessing.Process(target=_client, args=(parsed.hostname, parsed.port, share, seed, tracks, results))
        for seed in range(connections)
    ]
    started = time.perf_counter()
    for process in processes:
        process.start()
    parts = [results.get() for _ in processes]
    for process in processes:
        process.join()
    seconds = time.perf_counter() - started
    latencies = np.concatenate([part[0] for part in parts])
    return {
        "load_generator": f"python raw sockets, {connections} processes",
        "requests": int(latencies.size),
        "non_2xx": sum(part[1] for part in parts),
        "socket_errors": 0,
        "seconds": round(seconds, 2),
        "req_per_s": round(latencies.size / seconds, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 3),
        "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 3),
        "max_ms": round(float(latencies.max()) * 1000, 3),
    }


def count_log(log_dir: Path) -> dict:
    """Complete lines in every log file, and how many files end in a partial line (must be 0)."""
    lines = torn = files = 0
    for path in log_dir.iterdir():
        if path.name == "data.json" or path.name.startswith("data.json."):
            files += 1
            data = path.read_bytes()
            lines += data.count(b"\n")
            torn += bool(data) and not data.endswith(b"\n")
    return {"log_lines": lines, "log_files": files, "torn_files": torn}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--tracks", type=int, default=50_000)
    parser.add_argument("--python-client", action="store_true", help="use the Python client even if wrk exists")
    args = parser.parse_args()
    throughput = _throughput_module()
    load_before = os.getloadavg()[0]
    redis_process = None
    with tempfile.TemporaryDirectory(prefix="botify-load-") as scratch_name:
        scratch = Path(scratch_name)
        throughput.make_world(scratch, args.tracks, seed=1)
        config = throughput.write_config(scratch)
        if args.workers > 1:
            redis_process, redis_url = start_redis()
            settings = json.loads(config.read_text())
            config.write_text(json.dumps({**settings, "store": redis_url}))
        try:
            with served(config, workers=args.workers) as url:
                if shutil.which("wrk") and not args.python_client:
                    load = wrk_load(url, args.requests, args.connections, args.tracks, scratch)
                else:
                    load = python_load(url, args.requests, args.connections, args.tracks)
        finally:
            if redis_process is not None:
                redis_process.kill()
                redis_process.wait()
        log = count_log(scratch / "log")
    ok = load["requests"] - load["non_2xx"]
    print(
        json.dumps(
            {
                "workers": args.workers,
                "store": "redis" if args.workers > 1 else "memory",
                "connections": args.connections,
                "tracks": args.tracks,
                **load,
                "answers_2xx": ok,
                **log,
                "log_lines_per_2xx": round(log["log_lines"] / ok, 6) if ok else None,
                # wrk stops a thread with requests still in flight on its other connections: the service answers and
                # logs them but wrk does not count them, so with wrk up to `connections` more lines than 2xx answers
                # are expected.
                "log_lines_minus_2xx": log["log_lines"] - ok,
                "cpu_count": os.cpu_count(),
                "load_average_before": round(load_before, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
