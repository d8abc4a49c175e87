"""Per-user request counters and sessions: the state the service shares between requests and worker processes.

The counter numbers a user's /next requests, so a recommendation's random draw depends on which of that user's
requests it is rather than on when other users' requests arrived. The counters belong to a log folder: a service
restarted on a folder that already holds events continues them (so a restarted experiment replays), a service
started on a new or empty folder (or with `--reset-counters`) starts them at zero.

- `MemoryStore` (one worker): counters in the process, journalled per request into
  `<log_dir>/.botify-counters.journal`, saved on a clean stop into `<log_dir>/.botify-counters.json` (JSON, written
  atomically) and restored with the journal at start-up and by a worker that replaces another: a worker killed with
  SIGKILL, a SIGHUP reload or a crash of the whole service loses no count.
- `RedisStore` (any number of workers): one Redis hash per log folder, incremented by a Lua script that also
  checks a marker field, so a hash that vanished (Redis restarted without persistence, or flushed) is reported on
  stderr instead of silently counting afresh. Every call has a 0.5 s timeout; after a failure the store answers
  `StoreUnavailable` at once for a second (then tries Redis again), so a dead or stalled Redis costs each /next
  at most one timeout and the service recovers by itself.

Each store also keeps the sessions of the users a custom recommender serves (botify.custom): every playback
(track, listen time) of the current session, and the finished ones (a session ends with /last). They belong to the
log folder as the counters do: `MemoryStore` journals each playback into `<log_dir>/.botify-sessions.journal`
(JSON Lines) and saves them into `<log_dir>/.botify-sessions.json` beside the counters; `RedisStore` keeps them in a
second hash per log folder (`botify:sessions:<log_dir>`), updated by one Lua script per playback. A fresh start
(new or empty folder, `--reset-counters`) forgets them with the counters. Services without custom recommenders
never record a session, and write no session file.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
from pathlib import Path

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from botify_lab.formats import atomic_write_bytes

from .eventlog import LogDirError, warn

COUNTERS_FILE_NAME = ".botify-counters.json"
JOURNAL_FILE_NAME = ".botify-counters.journal"
SESSIONS_FILE_NAME = ".botify-sessions.json"
SESSIONS_JOURNAL_NAME = ".botify-sessions.journal"
JOURNAL_RECORD = struct.Struct("<IQ")  # user id, the user's count after the request
JOURNAL_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
REDIS_TIMEOUT_SECONDS = 0.5
REDIS_RETRY_AFTER_SECONDS = 1.0
MARKER_FIELD = "_started"  # never a user id (those are digits)

# Returns {the user's request number, 1 when the hash had to be recreated}.
NEXT_NUMBER_SCRIPT = """
local created = redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[3])
return {redis.call('HINCRBY', KEYS[1], ARGV[1], 1) - 1, created}
"""

# A playback appended to the user's current session (field "<user>", "track:time" entries joined by ","); when it
# ends the session, the session moves to the finished ones (field "<user>:earlier", sessions joined by ";").
# Returns {the current session, the finished sessions}.
LISTEN_SCRIPT = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
current = current and (current .. ',' .. ARGV[2]) or ARGV[2]
local earlier_field = ARGV[1] .. ':earlier'
local earlier = redis.call('HGET', KEYS[1], earlier_field) or ''
if ARGV[3] == '1' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  earlier = (earlier == '') and current or (earlier .. ';' .. current)
  redis.call('HSET', KEYS[1], earlier_field, earlier)
else
  redis.call('HSET', KEYS[1], ARGV[1], current)
end
return {current, earlier}
"""

Session = tuple[tuple[int, float], ...]  # (track, listen time) per playback, oldest first


class StoreStartError(RuntimeError):
    """The counter store cannot be reached at start-up (the service does not start)."""


class StoreUnavailable(RuntimeError):
    """The counter store cannot number this request (Redis down or stalled); the request is refused, not logged."""


class MemoryStore:
    """Counters in this process; for one worker, journalled so a replaced or killed worker loses none.

    Every number handed out is also appended to `<log_dir>/.botify-counters.journal` as (user, count after this
    request), one `write` on an O_APPEND descriptor, before the request is served. Replaying the journal takes each
    user's largest count, so replaying twice or out of order changes nothing. A clean stop saves the counters file
    and then removes the journal; a process that starts counting (the service at start-up, a worker that replaces
    one that died or was reloaded) restores the file and replays the journal first.
    """

    shared_between_processes = False

    def __init__(self, counters_path: Path | None = None, *, journal: bool = True):
        self.counters_path = None if counters_path is None else Path(counters_path)
        self.journalled = journal
        self.journal_path = None if counters_path is None else self.counters_path.with_name(JOURNAL_FILE_NAME)
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()
        self._counting_pid: int | None = None  # the process that counts (and so journals and saves)
        self._journal_fd = -1
        self.sessions = MemorySessions(
            None if counters_path is None else self.counters_path.with_name(SESSIONS_FILE_NAME), journal=journal
        )

    def start(self, fresh: bool) -> str:
        """Zero the counters (fresh) or restore the saved ones and the journal; returns a phrase for the startup line.

        Restoring folds the journal into the counters file, so each start-up begins with an empty journal.
        """
        path = self.counters_path
        if fresh or path is None:
            self.reset()
            for stale in (path, self.journal_path):
                if stale is not None and stale.exists():
                    stale.unlink()
            return "counters from zero"
        self.sessions.restore()
        saved = self._read_saved()
        journalled, torn = self._read_journal()
        if saved is None and not journalled:
            warn(
                f"the log folder holds events but no saved counters ({path}) and no journal: counting starts from "
                "zero and earlier users' random draws may repeat"
            )
            return "counters from zero (none saved)"
        counts = dict(saved or {})
        changed = _fold(counts, journalled)
        if torn:
            warn(
                f"the counters journal {self.journal_path} ends in a partial record (a power cut or a full disk?): "
                "its last request may be counted again"
            )
        if changed:
            warn(
                f"the last stop was not clean: {changed} users' counters restored from the journal "
                f"({len(journalled)} requests after the last save)"
            )
        with self._lock:
            self._counts = counts
        self.save()  # fold the journal in: the file now holds everything, the journal is gone
        how = "restored from the journal" if changed else "restored"
        return f"counters of {len(counts)} users {how}"

    def _read_saved(self) -> dict[int, int] | None:
        path = self.counters_path
        if not path.exists():
            return None
        try:
            saved = orjson.loads(path.read_bytes())
            counts = {int(user): number for user, number in saved["counts"].items()}
            if not all(type(number) is int and number >= 0 for number in counts.values()):
                raise ValueError("counts must be non-negative integers")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise LogDirError(
                f"cannot restore the request counters from {path} ({error}); start with "
                "--reset-counters to count from zero"
            ) from None
        return counts

    def _read_journal(self) -> tuple[list[tuple[int, int]], bool]:
        """The journal's (user, count) records and whether it ends in a partial one."""
        try:
            data = self.journal_path.read_bytes()
        except FileNotFoundError:
            return [], False
        except OSError as error:
            raise LogDirError(f"cannot read the counters journal {self.journal_path}: {error}") from None
        whole = len(data) - len(data) % JOURNAL_RECORD.size
        return list(JOURNAL_RECORD.iter_unpack(data[:whole])), whole != len(data)

    @classmethod
    def merged(cls, counters_path: Path, saved: list[Path]) -> MemoryStore:
        """A store holding the saved counters of several folders whose users are disjoint (the parts an in-process
        run serves from, one per simulation process), to be saved as one folder's."""
        store = cls(counters_path)
        for path in map(Path, saved):
            if not path.is_file():  # a process that served no request saved nothing
                continue
            counts = orjson.loads(path.read_bytes())["counts"]
            store._counts.update((int(user), number) for user, number in counts.items())
        return store

    def next_request_number(self, user: int) -> int:
        with self._lock:
            if self._counting_pid != os.getpid():
                self._take_over()
            number = self._counts.get(user, 0)
            if self._journal_fd >= 0:
                self._journal(user, number + 1)
            self._counts[user] = number + 1
        return number

    def _take_over(self) -> None:
        """In a process about to count for the first time: catch up with what earlier workers saved or journalled
        (a forked worker holds the supervisor's start-up copy), then journal from here on."""
        if self.counters_path is not None:
            counts = self._read_saved() or {}
            _fold(counts, self._read_journal()[0])
            self._counts = counts
        if self.counters_path is not None and self.journalled:
            try:
                self._journal_fd = os.open(self.journal_path, JOURNAL_FLAGS, 0o644)
            except OSError as error:
                raise StoreUnavailable(f"cannot open the counters journal {self.journal_path}: {error}") from None
        self._counting_pid = os.getpid()

    def _journal(self, user: int, count: int) -> None:
        record = JOURNAL_RECORD.pack(user, count)
        written = 0
        try:
            while written < len(record):
                written += os.write(self._journal_fd, record[written:])
        except OSError as error:
            if written:  # a full disk mid-record: cut it back so the next record stays aligned
                with contextlib.suppress(OSError):
                    os.ftruncate(self._journal_fd, os.fstat(self._journal_fd).st_size - written)
            raise StoreUnavailable(f"cannot journal the request counter: {error}") from None

    def listen(self, user: int, track: int, time: float, *, ends: bool) -> tuple[Session, tuple[Session, ...]]:
        """Record a playback of the user's session (the last one when `ends`); returns (the session so far, the
        user's finished sessions)."""
        return self.sessions.listen(user, track, time, ends=ends)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
        self.sessions.reset()

    def save(self) -> None:
        """Write the counters atomically (a crash mid-save leaves the previous file), users in id order so the same
        requests give the same file whatever order they arrived in; then drop the journal the file now covers."""
        if self.counters_path is None:
            return
        with self._lock:
            payload = orjson.dumps({"counts": {str(user): self._counts[user] for user in sorted(self._counts)}})
            self._journal_fd = _save_over_journal(self.counters_path, payload, self._journal_fd, self.journal_path)

    def close(self) -> None:
        """Save the counters if this process counted (the supervisor, which never serves, leaves the file alone);
        the same for the sessions."""
        if self._counting_pid == os.getpid():
            _save_or_warn(self.save, f"the request counters to {self.counters_path}")
            self._counting_pid = None
        self.sessions.close()


class MemorySessions:
    """The sessions of one worker's users, in this process: journalled per playback and saved on a clean stop,
    like the counters, so a replaced, reloaded or killed worker continues them.

    A journal record is `[user, place, track, time, ends]`, `place` being how many playbacks of the user came
    before it: replaying applies a record only at its place, so a record already in the saved file is skipped.
    """

    def __init__(self, path: Path | None, *, journal: bool):
        self.path = path
        self.journal_path = None if path is None else path.with_name(SESSIONS_JOURNAL_NAME)
        self.journalled = journal
        self._finished: dict[int, list[Session]] = {}
        self._current: dict[int, list[tuple[int, float]]] = {}
        self._playbacks: dict[int, int] = {}
        self._lock = threading.Lock()
        self._recording_pid: int | None = None  # the process that records (and so journals and saves)
        self._journal_fd = -1

    def listen(self, user: int, track: int, time: float, *, ends: bool) -> tuple[Session, tuple[Session, ...]]:
        with self._lock:
            if self._recording_pid != os.getpid():
                self._take_over()
            if self._journal_fd >= 0:
                self._journal(user, track, time, ends)
            return self._apply(user, track, time, ends)

    def _apply(self, user: int, track: int, time: float, ends: bool) -> tuple[Session, tuple[Session, ...]]:
        current = self._current.setdefault(user, [])
        current.append((track, time))
        self._playbacks[user] = self._playbacks.get(user, 0) + 1
        session = tuple(current)
        finished = self._finished.setdefault(user, [])
        if ends:
            finished.append(session)
            del self._current[user]
        return session, tuple(finished)

    def _take_over(self) -> None:
        """In a process about to record for the first time: catch up with what earlier workers saved or
        journalled, then journal from here on."""
        if self.path is not None:
            self.restore()
        if self.path is not None and self.journalled:
            try:
                self._journal_fd = os.open(self.journal_path, JOURNAL_FLAGS, 0o644)
            except OSError as error:
                raise StoreUnavailable(f"cannot open the sessions journal {self.journal_path}: {error}") from None
        self._recording_pid = os.getpid()

    def _journal(self, user: int, track: int, time: float, ends: bool) -> None:
        record = orjson.dumps([user, self._playbacks.get(user, 0), track, time, ends]) + b"\n"
        try:
            written = os.write(self._journal_fd, record)
        except OSError as error:
            raise StoreUnavailable(f"cannot journal the session: {error}") from None
        if written != len(record):  # a full disk mid-record: cut it back so the next record starts a line
            with contextlib.suppress(OSError):
                os.ftruncate(self._journal_fd, os.fstat(self._journal_fd).st_size - written)
            raise StoreUnavailable("cannot journal the session: short write")

    def restore(self) -> None:
        """The saved sessions, then the journal's playbacks that came after them."""
        self._finished, self._current, self._playbacks = {}, {}, {}
        if self.path.exists():
            try:
                saved = orjson.loads(self.path.read_bytes())["users"]
                for user, sessions in saved.items():
                    self._finished[int(user)] = [_session(rows) for rows in sessions["finished"]]
                    if sessions["current"]:
                        self._current[int(user)] = list(_session(sessions["current"]))
                    self._playbacks[int(user)] = sum(map(len, self._finished[int(user)])) + len(sessions["current"])
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
                raise LogDirError(
                    f"cannot restore the sessions from {self.path} ({error}); start with --reset-counters to "
                    "start every session afresh"
                ) from None
        try:
            lines = self.journal_path.read_bytes().splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                user, place, track, time, ends = orjson.loads(line)
            except (ValueError, TypeError):  # a partial last record (a power cut, a full disk)
                continue
            if place == self._playbacks.get(user, 0):
                self._apply(user, track, time, ends)

    def reset(self) -> None:
        with self._lock:
            self._finished.clear()
            self._current.clear()
            self._playbacks.clear()
            for stale in (self.path, self.journal_path):
                if stale is not None:
                    with contextlib.suppress(FileNotFoundError):
                        stale.unlink()

    def save(self) -> None:
        """Write the sessions atomically, users in id order, then drop the journal the file now covers."""
        if self.path is None or (not self._playbacks and not self.path.exists()):
            return
        with self._lock:
            users = {
                str(user): {"finished": self._finished.get(user, []), "current": self._current.get(user, [])}
                for user in sorted(self._playbacks)
            }
            payload = orjson.dumps({"users": users})
            self._journal_fd = _save_over_journal(self.path, payload, self._journal_fd, self.journal_path)

    def close(self) -> None:
        if self._recording_pid == os.getpid():
            _save_or_warn(self.save, f"the sessions to {self.path}")
            self._recording_pid = None


def _save_over_journal(path: Path, payload: bytes, journal_fd: int, journal_path: Path) -> int:
    """Write `payload` atomically (a crash mid-save leaves the previous file), then close and remove the journal
    the file now covers; returns the closed descriptor's new value, -1."""
    atomic_write_bytes(path, payload)
    if journal_fd >= 0:
        os.close(journal_fd)
    with contextlib.suppress(FileNotFoundError):
        journal_path.unlink()
    return -1


def _save_or_warn(save, what: str) -> None:
    """A clean stop's save; if it fails the journal stays, and the next start replays it."""
    try:
        save()
    except OSError as error:
        warn(f"cannot save {what} (the journal keeps them): {error}")


def _session(rows) -> Session:
    return tuple((int(track), float(time)) for track, time in rows)


def _fold(counts: dict[int, int], journalled: list[tuple[int, int]]) -> int:
    """Raise each user's count to the largest journalled one; returns how many users changed."""
    changed = set()
    for user, count in journalled:
        if count > counts.get(user, 0):
            counts[user] = count
            changed.add(user)
    return len(changed)


class RedisStore:
    """Counters in one Redis hash per log folder (plain integers, no pickles), shared by every worker of a service."""

    shared_between_processes = True

    def __init__(
        self,
        url: str,
        key: str = "botify:requests",
        sessions_key: str = "botify:sessions",
        *,
        timeout: float = REDIS_TIMEOUT_SECONDS,
    ):
        self.url = url
        self.key = key
        self.sessions_key = sessions_key
        self.client = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._next_number = self.client.register_script(NEXT_NUMBER_SCRIPT)
        self._listen = self.client.register_script(LISTEN_SCRIPT)
        self._marker = str(time.time_ns())
        self._down_until = 0.0
        self._down_reason: str | None = None
        self._loss_reported = False

    def start(self, fresh: bool) -> str:
        """Delete the counters (fresh) or keep them, reporting a hash that vanished."""
        try:
            return self._start(fresh)
        except redis.RedisError as error:
            raise StoreStartError(
                f"cannot reach Redis at {self.url} for the request counters ({type(error).__name__}: {error}); "
                "start redis-server there, or serve one worker with `store: memory`"
            ) from None

    def _start(self, fresh: bool) -> str:
        if fresh:
            self.reset()
            return "counters from zero"
        if self.client.hexists(self.key, MARKER_FIELD):
            return f"counters of {self.client.hlen(self.key) - 1} users kept"
        warn(
            f"Redis ({self.url}) holds no request counters for this log folder (restarted without persistence, "
            "or flushed?): counting starts from zero and earlier users' random draws may repeat"
        )
        self.client.hsetnx(self.key, MARKER_FIELD, self._marker)
        return "counters from zero (lost by Redis)"

    def next_request_number(self, user: int) -> int:
        number, created = self._run(self._next_number, self.key, [user, MARKER_FIELD, self._marker])
        if created and not self._loss_reported:
            self._loss_reported = True
            warn(
                f"Redis ({self.url}) lost the request counters while serving (restarted without persistence, or "
                "flushed?): counting continues from zero and earlier users' random draws may repeat"
            )
        return int(number)

    def listen(self, user: int, track: int, time: float, *, ends: bool) -> tuple[Session, tuple[Session, ...]]:
        """Record a playback of the user's session (the last one when `ends`); returns (the session so far, the
        user's finished sessions)."""
        current, earlier = self._run(self._listen, self.sessions_key, [user, f"{track}:{time!r}", int(ends)])
        finished = tuple(_parse_session(text) for text in earlier.split(b";")) if earlier else ()
        return _parse_session(current), finished

    def _run(self, script, key: str, args: list):
        """One script call; a failure answers StoreUnavailable, and so does every call for a second after it."""
        if time.monotonic() < self._down_until:
            raise StoreUnavailable(f"request store unavailable: {self._down_reason}")
        try:
            answer = script(keys=[key], args=args)
        except redis.RedisError as error:
            reason = f"{type(error).__name__}: {error}"
            if self._down_reason is None:
                warn(
                    f"Redis ({self.url}) unavailable ({reason}): /next answers 503, retrying every "
                    f"{REDIS_RETRY_AFTER_SECONDS:g} s (reported once)"
                )
            self._down_reason = reason
            self._down_until = time.monotonic() + REDIS_RETRY_AFTER_SECONDS
            raise StoreUnavailable(f"request store unavailable: {reason}") from None
        if self._down_reason is not None:
            warn(f"Redis ({self.url}) is reachable again")
            self._down_reason = None
        return answer

    def reset(self) -> None:
        """Start counting afresh, so a rerun of the same seeded traffic reproduces the same recommendations."""
        with self.client.pipeline() as pipe:
            pipe.delete(self.key, self.sessions_key)
            pipe.hset(self.key, MARKER_FIELD, self._marker)
            pipe.execute()

    def close(self) -> None:
        self.client.close()


def open_store(spec: str, log_dir: Path, *, journal: bool = True):
    """The store a config's `store` names, its counters tied to `log_dir` (journalled unless `journal` is False)."""
    if spec == "memory":
        return MemoryStore(Path(log_dir) / COUNTERS_FILE_NAME, journal=journal)
    folder = Path(log_dir).resolve()
    return RedisStore(spec, key=f"botify:requests:{folder}", sessions_key=f"botify:sessions:{folder}")


def _parse_session(text: bytes) -> Session:
    """A session as the Redis script keeps it ("track:time" entries joined by ",")."""
    return tuple((int(track), float(time)) for track, _, time in (entry.partition(b":") for entry in text.split(b",")))
