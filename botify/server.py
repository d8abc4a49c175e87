"""Serving the app with granian (a Rust HTTP server) in one or several worker processes.

granian's WSGI interface hands a request to a Python thread before its body has arrived and reads the body in
that thread, with no timeout: one client that stops mid-body holds the thread for good (granian's GitHub issue
#728, "wontfix"). So the app is served over granian's native async interface (RSGI) instead: the event loop awaits
the whole body (bounded by the app's MAX_CONTENT_LENGTH), then runs the Flask app on it in one go. A stalled
client then costs one idle connection, not the worker. Measured on 2 cores, one worker, 16 kept-alive
connections: ~5,600-6,300 req/s this way; granian's WSGI threads did ~3,800 (2-4 threads, fighting over the
GIL) or ~7,000 (1 thread, which one stalled client stops); waitress did ~2,100.

Well-formed /next and /last (the traffic) skip Flask's request machinery: the adapter hands them to the Service
and writes the answer the app's route would (tests/botify/test_botify_fast_path.py compares status, headers, body,
log and counters on valid and wrong requests); everything else goes through Flask. Paired on a slower machine:
4,270 against 1,710 req/s through Flask, p99 10 ms against 25 ms.

What the server adds to the app, so slow or failing parts cannot take the service down:

- Every request body must arrive within BODY_TIMEOUT_SECONDS (and headers within HEADER_TIMEOUT_SECONDS), else
  the connection gets a 408 and is closed; each worker handles at most `backpressure` requests at a time (more
  wait in the listen backlog), so slow clients cost bounded memory and cannot hold a worker for long.
- With a Redis store, /next (the only call that talks to Redis, with /last when a custom recommender needs the
  session) runs in a small thread pool off the event loop: a stalled Redis delays only the calls waiting on it
  (each at most the store's timeout), never GET /.
- A worker that dies (even by SIGKILL) is replaced by granian's supervisor at once; one that dies again within
  5.5 s of its replacement stops the service (a crash loop). With the in-memory store a replacement (also a SIGHUP
  reload) starts only once the old worker has stopped, and continues its counters (see botify.store).
- Workers stop with their supervisor, even one killed by SIGKILL (the kernel signals them; they stop cleanly, or
  are ended by an alarm WORKER_STOP_SECONDS later if that stop hangs), so no orphan keeps serving and holding the
  locks.
- Under a flood of clients that stall mid-body, bodies awaited beyond half the in-flight limit get a short timeout,
  so slots keep freeing and probes get in.
- One service per port and per log folder: a lock file per address (its pid inside) plus a plain bind of the port
  first, since granian's workers bind with SO_REUSEPORT, which would let a second service share the port; the log
  folder's lock is taken by the Service itself.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import io
import multiprocessing
import os
import re
import resource
import signal
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
from flask import Flask
from granian.constants import HTTPModes, Interfaces, Loops
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.rsgi import ProtocolClosed
from granian.server import MPServer

from . import create_app
from .app import (
    JSON_TYPE,
    RETRY_AFTER,
    TIME_HEADER,
    USER_ID_PATTERN,
    internal_error_message,
    json_response,
    parse_body,
    parse_simulated_time,
    parse_user,
)
from .eventlog import lock_exclusively, warn
from .service import BadRequest, RecommenderFailed, ServiceUnavailable

WORKER_STOP_SECONDS = 3
BODY_TIMEOUT_SECONDS = 5.0
# Under a flood of clients that send headers and stall, the bodies awaited beyond half the in-flight limit get this
# much time instead: slots keep freeing, so probes and fast clients still get in.
SHED_BODY_TIMEOUT_SECONDS = 0.05
HEADER_TIMEOUT_SECONDS = 5.0
LISTEN_BACKLOG = 2048
STORE_THREADS = 8
MAX_OPEN_FILES = 65536
RESERVED_FILES = 128  # log files, locks, Redis connections, the catalog and data files being read
PR_SET_PDEATHSIG = 1  # linux/prctl.h
ORPHAN_SIGNAL = signal.SIGUSR1  # what the kernel sends a worker whose supervisor died
EVENT_PATH = re.compile(rf"/(next|last)/({USER_ID_PATTERN.pattern})")  # the app's event routes, a user id of digits
TIME_HEADER_KEY = TIME_HEADER.lower()
_libc = ctypes.CDLL(None, use_errno=True)


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (at most MAX_OPEN_FILES); returns it.

    Every connection costs a descriptor: a worker at its limit cannot accept, and then no probe gets in.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, MAX_OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


class FlaskOverRSGI:
    """Run a Flask (WSGI) app as a granian RSGI app: buffer the request body, then call the app synchronously."""

    def __init__(self, app: Flask, *, body_timeout: float = BODY_TIMEOUT_SECONDS, patient_body_reads: int = 1024):
        self.app = app
        self.service = app.extensions["botify"]
        self.max_body_bytes = app.config["MAX_CONTENT_LENGTH"]
        self.body_timeout = body_timeout
        self.patient_body_reads = patient_body_reads
        self._body_reads = 0  # bodies being awaited now (one event loop per worker: a plain counter)
        # Only a remote store can block; the in-memory one answers at once, so /next then runs inline (faster).
        self.offload_next = self.service.store.shared_between_processes
        self.offloaded = ("/next/", "/last/") if self.service.keeps_sessions else ("/next/",)
        self._executor: ThreadPoolExecutor | None = None
        self._timeout_response = self._flatten(
            json_response({"error": f"request body not received within {body_timeout:g} s"}, 408)
        )
        self._shed_response = self._flatten(
            json_response(
                {
                    "error": f"request body not received within {SHED_BODY_TIMEOUT_SECONDS:g} s: too many clients "
                    "are sending bodies slowly right now"
                },
                408,
            )
        )

    def __rsgi_init__(self, loop) -> None:
        """In each worker (threads do not survive the fork): the pool that runs /next when it may block."""
        if self.offload_next:
            self._executor = ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="botify-next")

    def __rsgi_del__(self, loop) -> None:
        """A worker's clean stop: save what must survive a restart (the memory store's counters)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self.service.close()

    async def __rsgi__(self, scope, protocol) -> None:
        headers = scope.headers
        declared = headers.get("content-length", "")
        if declared.isdigit() and (len(declared) > 9 or int(declared) > self.max_body_bytes):
            # Refused by the app from the declared length alone (413), so the body is never read.
            body, content_length = b"", declared
        else:
            patient = self._body_reads < self.patient_body_reads
            self._body_reads += 1
            try:
                # Without chunking hyper delivers exactly the declared length (checked above), or nothing.
                # asyncio.timeout, not wait_for: no task per request on the hot path (5-10% more simulator steps/s)
                async with asyncio.timeout(self.body_timeout if patient else SHED_BODY_TIMEOUT_SECONDS):
                    body = await (self._read_chunked_body(protocol) if "transfer-encoding" in headers else protocol())
            except ProtocolClosed:
                return  # the client left before its body arrived: nothing to answer, nothing to log
            except TimeoutError:
                status, response_headers, payload = self._timeout_response if patient else self._shed_response
                protocol.response_bytes(status, response_headers + [("connection", "close")], payload)
                return
            finally:
                self._body_reads -= 1
            content_length = str(len(body))
        if self._executor is not None and scope.path.startswith(self.offloaded):
            loop = asyncio.get_running_loop()
            answer = await loop.run_in_executor(self._executor, self._answer, scope, body, content_length)
        else:
            answer = self._answer(scope, body, content_length)
        protocol.response_bytes(*answer)

    def _answer(self, scope, body: bytes, content_length: str) -> tuple[int, list, bytes]:
        """(status, headers, payload): an event straight from the Service when it is well-formed, else Flask's."""
        answer = self._answer_event(scope, body) if scope.method == "POST" else None
        if answer is None:
            status_line, headers, payload = self._call_app(self._environ(scope, body, content_length))
            answer = int(status_line[:3]), headers, payload
        return answer

    def _answer_event(self, scope, body: bytes) -> tuple[int, list, bytes] | None:
        """POST /next/<user> or /last/<user> (a user id of digits) with a body within the size limit, answered with
        the app's own parsing and checks, as its route answers it (status, headers, body and log line;
        tests/botify/test_botify_fast_path.py compares the two) without Flask's request machinery, which cost more
        than half of such a request. None for anything else, which the app answers."""
        started = time.perf_counter()
        match = EVENT_PATH.fullmatch(scope.path)
        if match is None or len(body) > self.max_body_bytes:
            return None
        clock_headers = scope.headers.get_all(TIME_HEADER_KEY)
        if len(clock_headers) > 1:
            return None  # the app reads repeated headers joined by commas
        try:
            user = parse_user(match[2])
            track, listen_time = parse_body(body)
            timestamp = parse_simulated_time(clock_headers[0] if clock_headers else None)
            if match[1] == "next":
                recommendation = self.service.next_track(user, track, listen_time, started=started, timestamp=timestamp)
                return _json_answer(200, {"user": user, "track": recommendation})
            self.service.last_track(user, track, listen_time, started=started, timestamp=timestamp)
            return _json_answer(200, {"user": user})
        except BadRequest as error:
            return _json_answer(400, {"error": str(error)})
        except ServiceUnavailable as error:
            status, headers, payload = _json_answer(503, {"error": str(error)})
            return status, [*headers, RETRY_AFTER], payload
        except RecommenderFailed as error:
            return _json_answer(500, {"error": str(error)})
        except Exception as error:
            self.app.logger.exception("unexpected error")
            return _json_answer(500, {"error": internal_error_message(error)})

    @staticmethod
    def _flatten(response) -> tuple[int, list, bytes]:
        return response.status_code, list(response.headers.items()), response.get_data()

    async def _read_chunked_body(self, protocol) -> bytes:
        """The body, or its first max+1 bytes: enough for the app to answer 413 without buffering the rest."""
        received = bytearray()
        async for chunk in protocol:
            received += chunk
            if len(received) > self.max_body_bytes:
                break
        return bytes(received)

    @staticmethod
    def _environ(scope, body: bytes, content_length: str) -> dict:
        """The WSGI environ of a buffered request: de-chunked, so the app always knows (and checks) its length."""
        server_host, _, server_port = scope.server.rpartition(":")
        environ = {
            "REQUEST_METHOD": scope.method,
            "SCRIPT_NAME": "",
            # granian has already percent-decoded the path as UTF-8; WSGI wants those bytes read as latin-1.
            "PATH_INFO": scope.path.encode("utf-8").decode("latin-1"),
            "QUERY_STRING": scope.query_string,
            "SERVER_NAME": server_host,
            "SERVER_PORT": server_port,
            "SERVER_PROTOCOL": f"HTTP/{scope.http_version}",
            "REMOTE_ADDR": scope.client.rpartition(":")[0],
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope.scheme,
            "wsgi.input": io.BytesIO(body),
            "CONTENT_LENGTH": content_length,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        for name, value in scope.headers.items():
            if name == "content-type":
                environ["CONTENT_TYPE"] = value
            elif name not in ("content-length", "transfer-encoding"):  # the body is buffered and de-chunked
                key = "HTTP_" + name.upper().replace("-", "_")
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _call_app(self, environ: dict) -> tuple[str, list, bytes]:
        """Run the Flask app on a buffered request: (status line, headers, body)."""
        started: list = []

        def start_response(status: str, headers: list, exc_info=None) -> None:
            started[:] = [status, headers]

        chunks = self.app(environ, start_response)
        try:
            payload = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        return started[0], started[1], payload


def _json_answer(status: int, content) -> tuple[int, list, bytes]:
    payload = orjson.dumps(content)
    return status, [("Content-Type", JSON_TYPE), ("Content-Length", str(len(payload)))], payload


def _default_stop_signals() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stop_as_an_orphan(_signum=None, _frame=None) -> None:
    """Stop cleanly (SIGTERM), and die by SIGALRM's default action if that stop has not ended WORKER_STOP_SECONDS later.

    A supervisor kills a worker whose stop hangs; an orphan has nobody to do so. granian's shutdown can deadlock
    (seen under heavy disk load: a native thread holding the GIL waits on one that waits for the GIL) and the
    orphan then held the port and the log folder for good. The default action needs no GIL and loses nothing: each
    log line is a single write and the memory store journals every increment. The kernel may signal an orphan
    more than once (seen: twice within 13 ms); the first signal sets the deadline.
    """
    if signal.getitimer(signal.ITIMER_REAL)[0] == 0:
        signal.alarm(WORKER_STOP_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)


def _stop_with_the_supervisor(supervisor_pid: int) -> None:
    """In a forked worker: stop (within WORKER_STOP_SECONDS) when the supervisor dies, even by SIGKILL.

    Otherwise init adopts the workers, which keep serving and logging and hold the port and log-folder locks, so no
    restart can take over. The kernel sends ORPHAN_SIGNAL, whose handler runs at once: granian handles only SIGINT
    and SIGTERM.
    """
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.signal(ORPHAN_SIGNAL, _stop_as_an_orphan)
    if _libc.prctl(PR_SET_PDEATHSIG, ORPHAN_SIGNAL, 0, 0, 0) != 0:
        warn(f"worker {os.getpid()} cannot ask to stop with its supervisor: {os.strerror(ctypes.get_errno())}")
    if os.getppid() != supervisor_pid:  # the supervisor died before the request took effect
        _stop_as_an_orphan()


class ServeError(RuntimeError):
    """A service that cannot start as asked (for example several workers without a shared store)."""


def claim_port(host: str, port: int) -> tuple[int, int]:
    """(port, lock descriptor): a lock file per address held for the service's life, and a port nobody uses.

    granian's workers bind with SO_REUSEPORT, so a second service could share a port in use; the lock file refuses
    a second botify (naming its pid), and a plain bind refuses a port any other process listens on. Port 0 is
    resolved to a free port here.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError as error:
        raise ServeError(f"cannot serve on {host}:{port}: {error}") from None
    if port == 0:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.bind(address)
                port = probe.getsockname()[1]
        except OSError as error:
            raise ServeError(f"cannot serve on {host}: {error.strerror or error}") from None
        address = (address[0], port, *address[2:])
    lock_path = Path(tempfile.gettempdir()) / f"botify-port-{host.replace('/', '_')}-{port}.lock"
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as error:
            raise ServeError(f"cannot serve on {host}:{port}: cannot open {lock_path}: {error.strerror}") from None
        owner = lock_exclusively(fd, lock_path)
        if owner is not None:
            os.close(fd)
            raise ServeError(f"cannot serve on {host}:{port}: another botify service ({owner}) serves there")
        try:
            if os.stat(lock_path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # the previous owner removed the file as we locked it: lock the new one
    try:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are no conflict
            probe.bind(address)
    except OSError as error:
        release_port(host, port, fd)
        reason = "in use by another process" if error.errno == errno.EADDRINUSE else error.strerror
        raise ServeError(f"cannot serve on {host}:{port}: {reason}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return port, fd


def release_port(host: str, port: int, fd: int) -> None:
    """Remove the address's lock file (still holding the lock, so no newcomer is fooled), then release it."""
    try:
        os.unlink(Path(tempfile.gettempdir()) / f"botify-port-{host.replace('/', '_')}-{port}.lock")
    except OSError:
        pass
    os.close(fd)


def startup_line(app: Flask, url: str, workers: int) -> str:
    service = app.extensions["botify"]
    experiments = "; ".join(
        f"{experiment.name}({', '.join(f'{arm.name}={arm.recommender}' for arm in experiment.config.arms)})"
        for experiment in service.experiments
    )
    return (
        f"botify: {len(service.catalog)} tracks, experiments {experiments}, store {service.config.store} "
        f"({service.counters}), log {service.config.log_dir}, {workers} worker(s), serving at {url}"
    )


def serve(
    config_path: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int = 1,
    reset_counters: bool = False,
) -> None:
    """Claim the port and the log folder, build the app once, fork the workers, serve until SIGTERM/SIGINT.

    The main process supervises (replacing a worker that dies); each forked worker serves the already-built app
    (its event log reopens its files after the fork). On SIGTERM/SIGINT the workers finish the requests in
    flight, save the memory store's counters and exit; every log line is a single write, so none is partial.
    """
    if workers < 1:
        raise ServeError("--workers must be at least 1")
    port, port_lock = claim_port(host, port)
    try:
        app = create_app(config_path, reset_counters=reset_counters)
    except BaseException:
        release_port(host, port, port_lock)
        raise
    service = app.extensions["botify"]
    try:
        if workers > 1 and not service.store.shared_between_processes:
            raise ServeError(
                "several workers need a shared store: set `store: redis://127.0.0.1:6379/0` in the config "
                "(with the in-memory store each worker would count requests on its own, breaking determinism)"
            )
        _serve_app(app, host, port, workers)
    finally:
        service.close()
        release_port(host, port, port_lock)


class StopThenStartServer(MPServer):
    """granian's server, replacing a worker only once the old one has stopped.

    granian starts the new worker first and overlaps the two (a SIGHUP reload, a worker past its lifetime). With
    the in-memory store each would count the same users on its own; this way the old worker saves its counters
    before the new one takes them over. Connections arriving meanwhile wait in the listen backlog.
    """

    def _respawn_workers(self, workers, spawn_target, target_loader, delay: float = 0):
        for idx in workers:
            old = self.wrks[idx]
            if old.is_alive():
                old.terminate()
                old.join(self.workers_kill_timeout)
                if old.is_alive():
                    old.kill()
                    old.join()
        super()._respawn_workers(workers, spawn_target, target_loader, delay=0)


def _serve_app(app: Flask, host: str, port: int, workers: int) -> None:
    # Workers inherit the built app by fork (the default on Linux before Python 3.14; the loader below hands over
    # an object in memory, which a spawned process could not receive).
    multiprocessing.set_start_method("fork", force=True)
    # A fork inherits granian's main-process handlers, which only flag the (child's copy of the) supervisor: a
    # SIGTERM that reached a worker before it installed its own handlers was lost and its stop hung. Until then
    # a worker has served nothing, so the default action (exit) loses nothing.
    supervisor_pid = os.getpid()

    def prepare_worker() -> None:
        _default_stop_signals()
        _stop_with_the_supervisor(supervisor_pid)

    os.register_at_fork(after_in_child=prepare_worker)
    # At most this many requests at a time per worker (more connections wait in the listen backlog), kept below
    # the descriptor limit so a worker never runs out of descriptors for the requests it has accepted.
    open_files = raise_open_file_limit()
    backpressure = max(64, min(LISTEN_BACKLOG, open_files - RESERVED_FILES))
    shared_store = app.extensions["botify"].store.shared_between_processes
    server = (MPServer if shared_store else StopThenStartServer)(
        "botify",  # a label only: the workers serve `app`, handed over by the loader below
        address=host,
        port=port,
        interface=Interfaces.RSGI,
        workers=workers,
        http=HTTPModes.http1,
        http1_settings=HTTP1Settings(header_read_timeout=int(HEADER_TIMEOUT_SECONDS * 1000)),
        websockets=False,
        backlog=LISTEN_BACKLOG,
        backpressure=backpressure,
        log_level=LogLevels.warning,
        # granian's threads hand each request to the loop with call_soon_threadsafe: asyncio writes a byte to its
        # wake-up pipe every time (a third of the loop thread's samples under load), uvloop coalesces the wake-ups.
        # The homework's test over HTTP (229,000 requests): 23.6 s against 27.3 s with asyncio's loop.
        loop=Loops.uvloop,
        # A worker finishes its requests in flight within milliseconds of SIGTERM; one that has not stopped after
        # this many seconds missed the signal (it can arrive while the worker is still starting) and is killed,
        # which loses nothing: each log line is a single write.
        workers_kill_timeout=WORKER_STOP_SECONDS,
        respawn_failed_workers=True,
    )

    @server.on_startup
    def announce() -> None:
        print(startup_line(app, f"http://{host}:{port}", workers), flush=True)

    server.serve(target_loader=lambda _label: FlaskOverRSGI(app, patient_body_reads=backpressure // 2))


def main_serve(args) -> int:
    try:
        serve(
            args.config,
            host=args.host,
            port=args.port,
            workers=args.workers,
            reset_counters=getattr(args, "reset_counters", False),
        )
    except ServeError as error:
        warn(str(error))
        return 2
    return 0
