"""The local audit spool of a fail-open client: JSON lines, fsynced, mode 0600, replayed to the control plane.

When the control plane cannot be reached and the tenant's fail mode is ``fail_open``, a governed call runs
anyway and its audit record is written here first; ``fail_closed`` denials are written too, so the audit of
the outage is complete. When the control plane answers again the records are sent to ``POST /v1/audit/spool``
(grouped by the token they were made under: the server takes the human from that bearer, never from the
record) and removed once the server acknowledged them.

One line::

    {"v": 1, "token": "<the bearer the call was made under>", "state": "started" | "done",
     "written_at": 1764370000.123, "pid": 4242, "host": "worker-1",
     "record": {call_id, time, tool, args, agent, tier, chain, decision, reason_code, reason, outcome,
                latency_us, trace_id}}

``record`` is exactly the server's schema (src/server/spool.ts). A fail-open call writes ``started`` (outcome
``none``) before the tool runs and ``done`` (outcome ``ok``/``error``, latency) after: a crash in between still
leaves the attempt on disk. The last line of a call id wins; a ``started`` line is replayed only when its
process is gone or it is older than ``stale_after`` seconds, so a running call is not reported early.

Crash safety: appends are ``O_APPEND`` writes followed by ``fsync`` under an exclusive ``flock`` (POSIX);
replay sends a batch, and only on the server's answer rewrites the file without the acknowledged call ids
(temporary file, ``fsync``, ``os.replace``, directory ``fsync``). A crash before the rewrite sends the batch
again next time, and the server stores each ``call_id`` once. Torn lines (a crash mid-write) are moved to
``<spool>.corrupt``; records the server refuses as malformed go to ``<spool>.rejected``; nothing is dropped.

A second kind of line keeps the result of a call the control plane decided, when its report could not be sent
(``reports.py``)::

    {"v": 1, "kind": "result", "token": "...", "state": "done", ...,
     "record": {call_id, tool, status: "ok" | "error", error?, report_token?, latency_us, time}}

It is replayed to ``POST /v1/calls/results`` in batches of one token's (not to the audit spool: the call id is the
control plane's), and removed once answered; a call the control plane no longer holds open (404) moves it to
``<spool>.rejected``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import socket
import stat
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one process per spool file
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("onbehalf")

DEFAULT_SPOOL = "~/.onbehalf/spool.jsonl"
MAX_ARGS_BYTES = 64 * 1024
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_HOST = socket.gethostname()


class SpoolError(Exception):
    """The spool cannot be written (permissions, owner, disk). A fail-open call then does not run."""


def uuid7() -> str:
    """A UUIDv7 (RFC 9562): 48-bit millisecond timestamp, version 7, 74 random bits."""
    value = ((time.time_ns() // 1_000_000) & ((1 << 48) - 1)) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return str(uuid.UUID(int=value))


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def make_record(
    *,
    call_id: str,
    tool: str,
    args: Any,
    agent: str,
    tier: str,
    chain: Sequence[str],
    decision: str,
    reason_code: str,
    reason: str,
    outcome: str,
    latency_us: int = 0,
    trace_id: str | None = None,
    time_iso: str | None = None,
) -> dict[str, Any]:
    """A record in the exact shape ``POST /v1/audit/spool`` accepts, cut to its limits."""
    encoded = json.dumps(args, allow_nan=False, separators=(",", ":"), sort_keys=True)
    if len(encoded.encode("utf-8")) > MAX_ARGS_BYTES:
        args = {
            "_onbehalf_truncated": True,
            "bytes": len(encoded.encode("utf-8")),
            "sha256": hashlib.sha256(encoded.encode("utf-8")).hexdigest(),
        }
    chain = [c[:200] for c in chain if c][-32:] or [agent[:200]]
    return {
        "call_id": call_id,
        "time": time_iso or now_iso(),
        "tool": tool[:200],
        "args": args,
        "agent": agent[:200],
        "tier": tier,
        "chain": chain,
        "decision": decision,
        "reason_code": reason_code,
        "reason": reason[:2000],
        "outcome": outcome,
        "latency_us": max(0, int(latency_us)),
        "trace_id": None if trace_id is None else trace_id[:200],
    }


@dataclass
class SendOutcome:
    """What the control plane said to one batch."""

    kind: str  # "ok" | "retry" (unreachable, 5xx, 429: stop for now) | "keep" (401/403) | "rejected" (4xx)
    accepted: int = 0
    duplicates: int = 0
    message: str = ""
    # With "ok": records of the batch the server refused (their index in the batch, and why); they are kept
    # in ``<spool>.rejected`` with the reason, never sent again.
    refused: list[tuple[int, str]] = field(default_factory=list)
    # With "ok": fail-open records the server stored flagged as client overrides (the tenant is fail_closed).
    overrides: int = 0


@dataclass
class ReplayResult:
    """What one replay did."""

    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    kept: int = 0  # refused for their token (expired?): still on disk
    remaining: int = 0  # call ids still in the spool afterwards
    error: str | None = None


Sender = Callable[[str, list], SendOutcome]
ResultSender = Callable[[str, list], list[SendOutcome]]
MAX_RESULTS_BATCH = 256  # results in one POST /v1/calls/results: the control plane's bound (src/server/check.ts)


class Spool:
    """A spool file. Safe for several threads; for several processes on POSIX (``flock``).

    Example::

        spool = Spool("/var/lib/agent/onbehalf.jsonl")
        spool.append(token, record, "done")
        spool.replay(send)          # send(token, records) -> SendOutcome
    """

    def __init__(self, path: str | os.PathLike[str], *, stale_after: float = 900.0) -> None:
        self.path = Path(os.path.expanduser(os.fspath(path))).absolute()
        self.stale_after = stale_after
        self._lock = threading.RLock()  # file operations (short); with the flock for other processes
        self._replaying = threading.Lock()  # one replay at a time; appends go on meanwhile
        self._in_flight: set[str] = set()
        self._in_flight_lock = threading.Lock()
        self.appends = 0  # lines this process appended: a reader can tell the file changed without a stat

    # -- writing -------------------------------------------------------------------------------------------

    def append(
        self,
        token: str,
        record: dict[str, Any],
        state: str,
        fallback_token: str | None = None,
        *,
        kind: str = "record",
    ) -> None:
        """Append one line and fsync it. Raises :class:`SpoolError` when it could not be made durable.

        ``fallback_token`` is the human's own token when ``token`` is a (short-lived) delegation token: the
        replay uses it when the server refuses the delegation token (expired). ``kind``: ``record`` (an audit
        record of a call decided without the control plane) or ``result`` (the result of a call it decided).
        """
        self.append_many([(token, record, fallback_token)], state, kind=kind)

    def append_many(
        self, items: Sequence[tuple[str, dict[str, Any], str | None]], state: str, *, kind: str = "record"
    ) -> None:
        """:meth:`append` of many ``(token, record, fallback_token)`` at once: one write, one ``fsync``."""
        now = time.time()
        lines = []
        for token, record, fallback_token in items:
            entry: dict[str, Any] = {
                "v": 1,
                **({} if kind == "record" else {"kind": kind}),
                "token": token,
                "state": state,
                "written_at": now,
                "pid": os.getpid(),
                "host": _HOST,
                "record": record,
            }
            if fallback_token is not None and fallback_token != token:
                entry["fallback_token"] = fallback_token
            lines.append(json.dumps(entry, allow_nan=False, separators=(",", ":")).encode("utf-8") + b"\n")
        data = b"".join(lines)
        try:
            with self._locked():
                fd = self._open(os.O_RDWR | os.O_CREAT | os.O_APPEND)
                try:
                    size = os.fstat(fd).st_size
                    if size > 0 and os.pread(fd, 1, size - 1) != b"\n":
                        data = b"\n" + data  # the previous writer crashed mid-line: never glue onto it
                    _write_all(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as e:
            raise SpoolError(f"cannot write the audit spool {self.path}: {e}") from e
        finally:
            self.appends += len(lines)

    def begin(self, call_id: str) -> None:
        """Mark a call as running in this process: its ``started`` line is not replayed until it is done."""
        with self._in_flight_lock:
            self._in_flight.add(call_id)

    def end(self, call_id: str) -> None:
        with self._in_flight_lock:
            self._in_flight.discard(call_id)

    # -- reading -------------------------------------------------------------------------------------------

    def has_data(self) -> bool:
        try:
            return self.path.stat().st_size > 0
        except OSError:
            return False

    def entries(self) -> list[dict[str, Any]]:
        """The latest line of every call id in the spool (for inspection and tests)."""
        with self._locked():
            good, _ = self._read()
        return list(_latest(good).values())

    # -- replay --------------------------------------------------------------------------------------------

    def replay(
        self,
        send: Sender,
        *,
        send_results: ResultSender | None = None,
        batch_records: int = 200,
        batch_bytes: int = 512 * 1024,
    ) -> ReplayResult:
        """Send what can be sent, batch by batch; remove each batch once the server acknowledged it.

        ``send(token, records)`` takes a batch of audit records; ``send_results(token, records)`` a batch of
        ``result`` lines of one token, and says what became of each (without it, those lines stay in the spool).
        """
        result = ReplayResult()
        with self._replaying:
            with self._locked():
                good, bad = self._read()
            if bad:
                self._rewrite(set())  # moves the torn lines aside
            groups: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
            results: list[dict[str, Any]] = []
            for entry in _latest(good).values():
                if entry.get("kind") == "result":
                    results.append(entry)
                elif self._sendable(entry):
                    groups.setdefault((entry["token"], entry.get("fallback_token")), []).append(entry)
            if send_results is not None and results:
                if not self._replay_results(send_results, results, result, batch_bytes):
                    groups = {}  # the control plane stopped answering: the rest waits for the next replay
            for (token, fallback), items in groups.items():
                stop = False
                for batch in _batches(items, batch_records, batch_bytes):
                    records = [e["record"] for e in batch]
                    outcome = send(token, records)
                    if outcome.kind == "keep" and isinstance(fallback, str):
                        outcome = send(fallback, records)  # the delegation token expired: the human's own
                    ids = {e["record"]["call_id"] for e in batch}
                    if outcome.kind == "ok":
                        refused = [(batch[i], why) for i, why in outcome.refused if 0 <= i < len(batch)]
                        if refused:
                            self._reject_each(refused)
                            result.rejected += len(refused)
                        if outcome.overrides:
                            log.warning(
                                "onbehalf: %d spooled fail-open records were stored as client overrides: "
                                "their tenant is fail_closed",
                                outcome.overrides,
                            )
                        self._rewrite(ids)
                        result.sent += len(batch)
                        result.accepted += outcome.accepted
                        result.duplicates += outcome.duplicates
                    elif outcome.kind == "rejected":
                        self._reject(batch, outcome.message)
                        result.rejected += len(batch)
                    elif outcome.kind == "keep":
                        result.kept += len(items)
                        log.warning(
                            "onbehalf: %d spooled audit records were refused for their token (%s); kept in %s",
                            len(items),
                            outcome.message,
                            self.path,
                        )
                        break
                    else:
                        result.error = outcome.message
                        stop = True
                        break
                if stop:
                    break
            with self._locked():
                good, _ = self._read()
            result.remaining = len(_latest(good))
        return result

    def _replay_results(
        self, send: ResultSender, entries: list[dict[str, Any]], result: ReplayResult, batch_bytes: int
    ) -> bool:
        """Send ``result`` lines in batches of one token's; ``False`` when the control plane stopped answering."""
        groups: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
        for entry in entries:
            groups.setdefault((entry["token"], entry.get("fallback_token")), []).append(entry)
        for (token, fallback), items in groups.items():
            for batch in _batches(items, MAX_RESULTS_BATCH, batch_bytes):
                outcomes = send(token, [e["record"] for e in batch])
                kept = [i for i, o in enumerate(outcomes) if o.kind == "keep"]
                if kept and isinstance(fallback, str):  # the delegation token expired: the human's own
                    for i, outcome in zip(kept, send(fallback, [batch[i]["record"] for i in kept])):
                        outcomes[i] = outcome
                done: set[str] = set()
                refused: list[tuple[dict[str, Any], str]] = []
                stopped: str | None = None
                for entry, outcome in zip(batch, outcomes):
                    if outcome.kind == "ok":
                        done.add(entry["record"]["call_id"])
                        result.sent += 1
                        result.accepted += outcome.accepted
                        result.duplicates += outcome.duplicates
                    elif outcome.kind == "rejected":
                        refused.append((entry, outcome.message))
                        result.rejected += 1
                    elif outcome.kind == "keep":
                        result.kept += 1
                        log.warning(
                            "onbehalf: the spooled result of call %s was refused for its token (%s); kept in %s",
                            entry["record"]["call_id"],
                            outcome.message,
                            self.path,
                        )
                    else:
                        stopped = outcome.message
                if refused:
                    self._reject_each(refused)
                if done:
                    self._rewrite(done)
                if stopped is not None:
                    result.error = stopped
                    return False
        return True

    # -- internals -----------------------------------------------------------------------------------------

    def _sendable(self, entry: dict[str, Any]) -> bool:
        call_id = entry["record"]["call_id"]
        with self._in_flight_lock:
            if call_id in self._in_flight:
                return False
        if entry.get("state") == "done":
            return True
        age = time.time() - float(entry.get("written_at") or 0)
        if age > self.stale_after:
            return True
        pid = entry.get("pid")
        return entry.get("host") == _HOST and isinstance(pid, int) and pid != os.getpid() and not _alive(pid)

    def _read(self) -> tuple[list[dict[str, Any]], list[bytes]]:
        """Parsed lines and unparseable ones. Call with the file lock held."""
        try:
            fd = self._open(os.O_RDONLY)
        except FileNotFoundError:
            return [], []
        with os.fdopen(fd, "rb") as f:
            raw = f.read()
        good: list[dict[str, Any]] = []
        bad: list[bytes] = []
        for line in raw.split(b"\n"):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
                    raise ValueError("not a spool line")
                if not isinstance(entry.get("record"), dict) or "call_id" not in entry["record"]:
                    raise ValueError("no record")
                good.append(entry)
            except ValueError:
                bad.append(line)
        return good, bad

    def _rewrite(self, remove: set[str]) -> None:
        """Rewrite the spool without ``remove`` (atomically); torn lines go to ``.corrupt``."""
        with self._locked():
            good, bad = self._read()
            if bad:
                self._append_side(".corrupt", bad)
            keep = [e for e in good if e["record"]["call_id"] not in remove]
            data = b"".join(
                json.dumps(e, allow_nan=False, separators=(",", ":")).encode("utf-8") + b"\n" for e in keep
            )
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOFOLLOW | _CLOEXEC, 0o600)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)

    def _reject(self, batch: list[dict[str, Any]], message: str) -> None:
        self._reject_each([(e, message) for e in batch])

    def _reject_each(self, refused: list[tuple[dict[str, Any], str]]) -> None:
        """Move refused records to ``<spool>.rejected``, each with why, and out of the spool."""
        log.error(
            "onbehalf: the control plane refused %d spooled audit records (%s); moved to %s.rejected",
            len(refused),
            refused[0][1],
            self.path,
        )
        lines = []
        for e, why in refused:
            lines.append(json.dumps(dict(e, rejected=why[:500]), allow_nan=False, separators=(",", ":")).encode("utf-8"))
        with self._locked():
            self._append_side(".rejected", lines)
        self._rewrite({e["record"]["call_id"] for e, _ in refused})

    def _append_side(self, suffix: str, lines: list[bytes]) -> None:
        side = self.path.with_name(self.path.name + suffix)
        fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_APPEND | _NOFOLLOW | _CLOEXEC, 0o600)
        try:
            _write_all(fd, b"".join(line + b"\n" for line in lines))
            os.fsync(fd)
        finally:
            os.close(fd)

    def _open(self, flags: int) -> int:
        """Open the spool file itself: never through a symlink, only if it is ours, and tightened to 0600."""
        created = False
        if flags & os.O_CREAT and not self.path.parent.exists():
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            created = True
        fd = os.open(self.path, flags | _NOFOLLOW | _CLOEXEC, 0o600)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, f"{self.path} is not a regular file")
            if hasattr(os, "getuid") and st.st_uid != os.getuid():
                raise OSError(errno.EPERM, f"{self.path} belongs to another user")
            if st.st_mode & 0o077 and flags & (os.O_WRONLY | os.O_RDWR):
                log.warning("onbehalf: %s was readable by others; setting it to 0600", self.path)
                os.fchmod(fd, 0o600)
        except BaseException:
            os.close(fd)
            raise
        if created:
            _fsync_dir(self.path.parent)
        return fd

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            if fcntl is None:
                yield
                return
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock_path = self.path.with_name(self.path.name + ".lock")
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock


def _latest(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for e in entries:
        latest[e["record"]["call_id"]] = e
    return latest


def _batches(items: list[dict[str, Any]], max_records: int, max_bytes: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    size = 0
    for e in items:
        n = len(json.dumps(e["record"], separators=(",", ":")))
        if batch and (len(batch) >= max_records or size + n > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(e)
        size += n
    if batch:
        yield batch


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True
