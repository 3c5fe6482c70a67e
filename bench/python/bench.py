"""The Python client against a local control plane, with a raw kept-alive request as the floor (issue 21).

Run by bench/python.ts (``npm run bench -- python``), which starts the control plane (bench/fixtures/server-child.ts)
and passes its URL and a token: ``python3 bench/python/bench.py URL TOKEN``. Prints one JSON object.

Each round times, one after the other on the same server: the floor (``POST /v1/check`` with ``http.client`` on one
kept-alive connection, the body the client sends: ``"report": "token"`` beside ``client.check()``, which keeps no
state on the server, the default beside ``@governed``), ``client.check()``, a ``@governed`` call whose output policy does
not transform (one round trip; its report in the background), paced as an agent calls tools (the report of a call is
sent before the next call, untimed) and back to back (no pause: the reports go in batches, ``POST
/v1/calls/results``, while the next calls are checked; its ratio is to floor blocks timed just before and just
after it), the same call with every report in the caller's thread
(two round trips, as a redacted output's report always is), two raw requests (check, result) as that case's floor,
and ``check`` with urllib (a new connection per request: the client before issue 21). Then the same over HTTPS,
through a TLS-terminating stand-in with a test CA (clients/python/tests/stand_in.py), counting handshakes.
Figures are medians of the rounds' medians (per-call latency) and of the rounds' rates (calls per second, a
background report's sending included: the rate counts until the queue is drained). The ratios the targets are about
are measured call by call in turn with the floor (floor, client, floor, client, ...), so that both meet the same
noise on a busy machine: the median of the rounds' ratios of medians.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [os.path.join(ROOT, "clients/python"), os.path.join(ROOT, "clients/python/tests")]

from onbehalf import Client, governed  # noqa: E402

from stand_in import CountingStandIn, TestCA  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_PY_ROUNDS") or 5)
CALLS = int(os.environ.get("BENCH_PY_CALLS") or 200)
TOOL = "get_customer"  # allowed; post_transform audit (bench/fixtures/server-child.ts)
AGENT = {"name": "support-bot", "tier": "interactive"}


def timed(
    n: int, fn: Callable[[int], Any], after: Callable[[], Any] | None = None, between: Callable[[], Any] | None = None
) -> tuple[float, float]:
    """Per-call median (µs) of ``n`` calls, and calls per second (``after`` included: a queue drained). ``between``
    runs after each call, outside its time (and inside the rate)."""
    times = []
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn(i)
        times.append(time.perf_counter_ns() - t0)
        if between is not None:
            between()
    if after is not None:
        after()
    elapsed = time.perf_counter() - start
    return statistics.median(times) / 1000, n / elapsed


def paired(n: int, floor: Callable[[int], Any], fn: Callable[[int], Any], between: Any = None) -> tuple[float, float]:
    """Per-call medians (µs) of ``floor`` and ``fn`` called in turn, ``n`` times each: both meet the same noise."""
    a, b = [], []
    for i in range(n):
        t0 = time.perf_counter_ns()
        floor(i)
        t1 = time.perf_counter_ns()
        fn(i)
        t2 = time.perf_counter_ns()
        if between is not None:
            between()
        a.append(t1 - t0)
        b.append(t2 - t1)
    return statistics.median(a) / 1000, statistics.median(b) / 1000


class Raw:
    """The floor: requests with http.client on one kept-alive connection, nothing else."""

    def __init__(self, url: str, token: str, context: Any = None) -> None:
        u = urllib.parse.urlsplit(url)
        if u.scheme == "https":
            self.conn: http.client.HTTPConnection = http.client.HTTPSConnection(u.hostname, u.port, context=context)
        else:
            self.conn = http.client.HTTPConnection(u.hostname, u.port)
        self.headers = {"authorization": f"Bearer {token}", "content-type": "application/json", "accept": "application/json"}

    def post(self, path: str, body: Any) -> Any:
        self.conn.request("POST", path, json.dumps(body, separators=(",", ":")).encode(), self.headers)
        res = self.conn.getresponse()
        return json.loads(res.read())

    def check(self, i: int) -> Any:
        return self.post("/v1/check", {"tool": TOOL, "args": {"customer_id": f"c-{i}"}, "agent": AGENT})

    def check_token(self, i: int) -> Any:
        """What ``client.check()`` asks: nothing kept on the server, a report token in the answer."""
        return self.post(
            "/v1/check", {"tool": TOOL, "args": {"customer_id": f"c-{i}"}, "agent": AGENT, "report": "token"}
        )

    def check_and_report(self, i: int) -> Any:
        call_id = self.check(i)["call_id"]
        return self.post(f"/v1/calls/{call_id}/result", {"status": "ok", "output": {"id": f"c-{i}"}})


def urllib_check(url: str, token: str) -> Callable[[int], Any]:
    def check(i: int) -> Any:
        body = json.dumps({"tool": TOOL, "args": {"customer_id": f"c-{i}"}, "agent": AGENT}).encode()
        req = urllib.request.Request(f"{url}/v1/check", data=body, method="POST")
        req.add_header("authorization", f"Bearer {token}")
        req.add_header("content-type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as res:
            return json.loads(res.read())

    return check


def tool(client: Client) -> Callable[..., Any]:
    @governed(client, name=TOOL)
    def get_customer(customer_id: str) -> dict:
        return {"id": customer_id, "name": "Ada"}

    return get_customer


def measure(url: str, token: str, spool: str, context: Any = None, ca_file: str | None = None) -> dict[str, Any]:
    tls = {"ca_file": ca_file} if ca_file else {}
    raw = Raw(url, token, context)
    one = Client(url, spool_path=spool, **tls)
    two = Client(url, spool_path=spool, background_reports=False, **tls)
    governed_one, governed_two = tool(one), tool(two)
    one_reports = [0, 0]  # result requests the background client sent, and the reports in them
    burst_reports = [0, 0]  # the same, of the back-to-back series
    batched = hasattr(one, "_send_results")  # (a client before batches sent each report alone: a baseline)
    send = one._send_results if batched else one._send_result  # type: ignore[attr-defined]

    def counted(token: str, records: Any) -> Any:
        one_reports[0] += 1
        one_reports[1] += len(records) if batched else 1
        return send(token, records)

    setattr(one, "_send_results" if batched else "_send_result", counted)
    series: dict[str, list[tuple[float, float]]] = {}
    ratios: dict[str, list[float]] = {"check": [], "governed": [], "governed_burst": []}

    def run(
        name: str, fn: Callable[[int], Any], after: Callable[[], Any] | None = None, between: Any = None
    ) -> None:
        series.setdefault(name, []).append(timed(CALLS, fn, after, between))

    with one.acting_as(token, agent="support-bot"), two.acting_as(token, agent="support-bot"):
        for _ in range(2):  # warm-up: JIT, token cache, SQLite pages, connections
            timed(CALLS, raw.check)
            timed(CALLS, lambda i: one.check(TOOL, {"customer_id": f"c-{i}"}))
            timed(CALLS, lambda i: governed_one(f"c-{i}"), one.flush)
            timed(CALLS, lambda i: governed_two(f"c-{i}"))
        for _ in range(ROUNDS):
            # call by call, in turn with the floor: the ratios the targets are about
            f, x = paired(CALLS, raw.check_token, lambda i: one.check(TOOL, {"customer_id": f"c-{i}"}))
            ratios["check"].append(x / f)
            f, x = paired(CALLS, raw.check, lambda i: governed_one(f"c-{i}"), one._drain_reports)
            ratios["governed"].append(x / f)
            # in blocks: latency and calls per second of each
            run("floor", raw.check)
            run("check", lambda i: one.check(TOOL, {"customer_id": f"c-{i}"}))
            # as an agent calls tools (a model turn between two calls): each call's report is sent before the next
            run("governed", lambda i: governed_one(f"c-{i}"), one.flush, one._drain_reports)
            # back to back: the control plane takes each call's check while it takes the previous calls' reports
            # (batched); its ratio to the floor measured in the blocks just before and just after it
            before = timed(CALLS, raw.check)[0]
            sent = list(one_reports)
            run("governed_burst", lambda i: governed_one(f"c-{i}"), one.flush)
            burst_reports[0] += one_reports[0] - sent[0]
            burst_reports[1] += one_reports[1] - sent[1]
            after = timed(CALLS, raw.check)[0]
            ratios["governed_burst"].append(series["governed_burst"][-1][0] / ((before + after) / 2))
            run("governed_sync", lambda i: governed_two(f"c-{i}"))
            run("floor_two", raw.check_and_report)
            if context is None:
                run("urllib_check", urllib_check(url, token))
    out: dict[str, Any] = {
        name: {
            "p50_us": statistics.median(p for p, _ in values),
            "per_s": statistics.median(r for _, r in values),
        }
        for name, values in series.items()
    }
    out["paired"] = {name: statistics.median(values) for name, values in ratios.items()}
    # connections (with TLS: handshakes) each client opened, and its calls (warm-up included)
    out["one_connections"] = one._pool.connections_opened  # check() and @governed with background reports
    out["one_calls"] = (4 + 5 * ROUNDS) * CALLS  # warm-up 2 × 2 series, then 5 series a round
    out["report_requests"] = burst_reports[0]  # result requests of the back-to-back series (batches), and reports
    out["reports"] = burst_reports[1]
    out["two_connections"] = two._pool.connections_opened  # @governed, every report in the caller's thread
    out["two_calls"] = (2 + ROUNDS) * CALLS
    one.close()
    two.close()
    raw.conn.close()
    return out


def main() -> None:
    url, token = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory(prefix="onbehalf-bench-py-") as tmp:
        plain = measure(url, token, os.path.join(tmp, "spool.jsonl"))
        ca = TestCA(os.path.join(tmp, "ca"))
        proxy = CountingStandIn(url, tls=ca.server_context())
        try:
            import ssl

            context = ssl.create_default_context(cafile=ca.ca)
            over_tls = measure(proxy.url, token, os.path.join(tmp, "spool-tls.jsonl"), context, ca.ca)
            over_tls["proxy_handshakes"] = proxy.handshakes
        finally:
            proxy.stop()
    print(json.dumps({"rounds": ROUNDS, "calls": CALLS, "plain": plain, "tls": over_tls}))


if __name__ == "__main__":
    main()
