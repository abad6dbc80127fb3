"""``make bench``: this package against stock Celery (kombu SQS + ``dynamodb://``), side by side
in one run, on one moto server behind the metering proxy (tests/fakes/aws_proxy.py, in a process
of its own). Writes docs/benchmarks.md, docs/benchmarks.png, test-artifacts/bench.json and the
measured tables of the README's "Cost per task" and "Benchmarks and chaos" sections.

Stock Celery is tuned as a performance-minded user would: prefetch 4 (and 1), 1 s long polls,
``polling_interval`` 0.1 s, ``get(interval=0.05)`` for the round trip, one MessageGroupId per task
on FIFO queues (``apply_async(MessageGroupId=...)``; kombu's default puts every message in group
``default``). This package runs with ``broker_settings(...)`` defaults (20 s long polls) and
``ddb://``, prefetch 4 and 1, claim ``strict`` (default) and ``redelivery`` (lean).

Scenarios:

a. throughput of trivial tasks, 2 workers x 2 processes, prefetch 4 and 1: the queue is filled
   first, then the workers start; tasks/s over the window where both workers run (task timestamps),
   the worker slot time per task beyond the task body, and the CPU time per task of each process
   (moto, proxy, worker main processes, pool processes) while the queue drains;
b. ``submit_many`` (stock: ``group().apply_async()``) + ``join()`` of 200 tasks, standard and
   FIFO: AWS calls, write/read units and SQS requests per task, request cost per million tasks;
c. ``delay()`` + ``get()`` round trip of a no-op task, 200 sequential: p50/p90, calls per round trip;
d. FIFO, 2 workers x 1 process, 20 tasks of 0.5 s in 20 groups: measured vs ideal 5 s;
e. lean mode (``claim="redelivery"``): scenario b's cost against stock's.

``BENCH_SCALE=0.2 make bench`` runs a smaller version (task counts scaled, at least 10; d is not
scaled). ``BENCH_NO_DOCS=1`` writes only test-artifacts/ (trial runs).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
from celery import group

from tests.fakes.moto_server import MotoServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
ARTIFACTS = ROOT / "test-artifacts"
REGION = "eu-west-1"
SCALE = float(os.environ.get("BENCH_SCALE", "1"))

#: AWS list prices (us-east-1, on-demand, requests beyond the free tier). SQS bills each 64 KiB
#: chunk of a request's payload as one request.
PRICES = {
    "sqs_standard_per_million": 0.40,
    "sqs_fifo_per_million": 0.50,
    "ddb_write_unit_per_million": 0.625,
    "ddb_read_unit_per_million": 0.125,
}

TARGETS = {
    "throughput_ratio_p4": 2.0,   # a: >= 2x tuned stock at prefetch 4
    "calls_per_task": 2.5,        # b: submit_many + join
    "usd_per_million": 3.5,       # b: request cost per million tasks
    "p50_ms": 50.0,               # c
    "calls_per_round_trip": 8.0,  # c
    "fifo_efficiency": 0.90,      # d
    "fifo_seconds": 5.55,         # d
}

WORKERS, PROCESSES = 2, 2


def n(count: int) -> int:
    return max(10, int(round(count * SCALE)))


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


# ------------------------------------------------------------------------------------- set-ups


class Setup:
    """One flavour on one fresh queue (the table is shared by the set-ups of a flavour), its
    worker subprocesses and a client app in this process."""

    def __init__(self, server: MotoServer, flavor: str, *, fifo: bool = False, prefetch: int = 4,
                 claim: str | None = None, table: str) -> None:
        self.server, self.flavor, self.fifo, self.prefetch, self.claim = server, flavor, fifo, prefetch, claim
        self.table = table
        name = f"bench-{flavor.replace('_', '-')}-p{prefetch}-{claim or 'default'}-{uuid.uuid4().hex[:6]}"
        self.queue = name + (".fifo" if fifo else "")
        self.sqs = boto3.client("sqs", region_name=REGION, endpoint_url=server.direct_url)
        attributes = {"VisibilityTimeout": "60"}
        if fifo:
            attributes.update(FifoQueue="true", ContentBasedDeduplication="false")
        direct_url = self.sqs.create_queue(QueueName=self.queue, Attributes=attributes)["QueueUrl"]
        self.direct_queue_url = direct_url
        self.url = direct_url.replace(server.direct_url, server.url)
        self.workers: list[subprocess.Popen[bytes]] = []
        self._app: Any = None

    @property
    def stock(self) -> bool:
        return self.flavor == "stock"

    def env(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_FLAVOR": self.flavor, "BENCH_ENDPOINT": self.server.url,
               "BENCH_QUEUE": self.queue, "BENCH_QUEUE_URL": self.url, "BENCH_TABLE": self.table,
               "BENCH_PREFETCH": str(self.prefetch), "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        if self.claim:
            env["BENCH_CLAIM"] = self.claim
        else:
            env.pop("BENCH_CLAIM", None)
        return env

    def app(self) -> Any:
        if self._app is None:
            saved = dict(os.environ)
            os.environ.update(self.env())
            if not self.claim:
                os.environ.pop("BENCH_CLAIM", None)
            try:
                from benchmarks.app import make_app

                self._app = make_app()
            finally:
                os.environ.clear()
                os.environ.update(saved)
        return self._app

    def start_workers(self, count: int = WORKERS, concurrency: int = PROCESSES) -> None:
        for i in range(count):
            out = open(ARTIFACTS / f"bench-{self.queue}-{i}.log", "w")  # noqa: SIM115
            self.workers.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "benchmarks.app", "worker", "-l", "warning", "-c",
                 str(concurrency), "-n", f"w{i}@bench", "--without-heartbeat", "--without-gossip",
                 "--without-mingle"], env=self.env(), cwd=str(ROOT), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True))

    def warm_up(self) -> None:
        """Until a round trip works (workers up and consuming), then let batched acks flush."""
        noop = self.app().tasks["bench.noop"]
        deadline = time.monotonic() + 120
        while True:
            try:
                options = {"MessageGroupId": uuid.uuid4().hex} if self.stock and self.fifo else {}
                assert noop.apply_async((0,), **options).get(timeout=20, **self.get_options()) == 0
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
        for i in range(3):
            noop.apply_async((i,), **({"MessageGroupId": uuid.uuid4().hex} if self.stock and self.fifo else {})
                             ).get(timeout=20, **self.get_options())
        time.sleep(1.5)

    def get_options(self) -> dict[str, Any]:
        return {"interval": 0.05} if self.stock else {}

    def backlog(self) -> int:
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.direct_queue_url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return sum(int(v) for v in attributes.values())

    def processes(self) -> dict[str, list[int]]:
        """Pids by role while the workers run: the moto server, the metering proxy, the workers'
        main processes and their pool processes."""
        pools = []
        for proc in self.workers:
            out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True, text=True)
            pools += [int(pid) for pid in out.stdout.split()]
        proxy = self.server.proxy_process
        return {"moto": [self.server.process.pid], "proxy": [proxy.pid] if proxy else [],
                "worker main": [p.pid for p in self.workers], "worker pool": pools}

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.workers:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # our own worker's process group
                proc.wait(10)
        self.workers.clear()


def measure(server: MotoServer, tasks: int) -> dict[str, Any]:
    counts = server.counts()
    units = server.units()
    calls = sum(v for k, v in counts.items() if "#" not in k)
    return {"counts": counts, "units": units, "calls": calls, "tasks": tasks}


# ----------------------------------------------------------------------------------- scenarios


def throughput(setup: Setup, tasks: int) -> dict[str, Any]:
    """(a) Fill the queue, start the workers, time the tasks from their own timestamps."""
    app = setup.app()
    stamp = app.tasks["bench.stamp"]
    if setup.stock:
        result = group(stamp.s(i) for i in range(tasks)).apply_async()
    else:
        from celery_sqs_ddb import submit_many

        result = submit_many(stamp, [(i,) for i in range(tasks)], progress=False)
    started = time.monotonic()
    setup.server.reset_counts()
    setup.start_workers()
    time.sleep(2)
    processes = setup.processes()
    cpu_before, t0 = {k: cpu_seconds(v) for k, v in processes.items()}, time.time()
    while setup.backlog() and time.monotonic() - started < 900:
        time.sleep(1)  # no result polling while the workers run (it would load moto)
    cpu = {k: cpu_seconds(v) - cpu_before[k] for k, v in processes.items()}
    t1 = time.time()
    counts = setup.server.counts()  # the workers' calls (and the driver's backlog polls), before the join
    rows = result.join(timeout=600)
    assert sorted(r[3] for r in rows) == list(range(tasks)), "wrong results"
    setup.stop_workers()
    stats = window_stats(rows, tasks)
    done = sum(1 for r in rows if t0 <= r[2] <= t1)
    stats["cpu_ms_per_task"] = {k: v * 1000 / max(done, 1) for k, v in cpu.items()}
    stats["calls_per_task"] = {k: v / tasks for k, v in sorted(counts.items()) if "#" not in k}
    return stats


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of processes so far (Linux /proc; 0 for a process gone)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


#: A pause this long between task starts is a stall (messages waiting out their visibility timeout),
#: not throughput: it is reported apart.
STALL_S = 5.0


def window_stats(rows: list[list[Any]], tasks: int) -> dict[str, Any]:
    """Tasks/s while both workers run: from the later worker's first task to the end of the last
    task before any stall; tasks after a stall are counted apart."""
    rows = sorted(rows, key=lambda r: r[1])
    first: dict[str, float] = {}
    for host, start, _, _ in rows:
        first[host] = min(first.get(host, start), start)
    stall_at = next((b[1] for a, b in zip(rows, rows[1:], strict=False) if b[1] - a[1] > STALL_S), None)
    active = [r for r in rows if stall_at is None or r[1] < stall_at]
    stalled = len(rows) - len(active)
    t0 = max(first.values()) if len(first) == WORKERS else min(first.values())
    window = [r for r in active if r[1] >= t0]
    if len(window) < max(10, len(active) // 4):  # one worker did nearly everything: every active task
        t0, window = min(first.values()), active
    t1 = max(r[2] for r in window)
    seconds = max(t1 - t0, 1e-6)
    body = statistics.mean(r[2] - r[1] for r in window)
    slot = WORKERS * PROCESSES * seconds / len(window)
    return {"tasks": tasks, "window_tasks": len(window), "seconds": seconds, "tasks_per_s": len(window) / seconds,
            "slot_ms": slot * 1000, "body_ms": body * 1000, "overhead_ms": (slot - body) * 1000,
            "per_worker": {h: sum(1 for r in rows if r[0] == h) for h in first},
            "stalled_tasks": stalled,
            "stall_s": (min(r[1] for r in rows[len(active):]) - max(r[1] for r in active)) if stalled else 0.0,
            "wall_s": max(r[2] for r in rows) - min(first.values()),
            "starts": [round(r[1] - t0, 3) for r in rows]}


def call_latency(server: MotoServer, samples: int = 40) -> dict[str, float]:
    """Median time of one small DynamoDB call through the proxy and straight to moto (calibration:
    what an AWS call costs on this machine)."""
    out = {}
    for label, url in (("proxy_ms", server.url), ("direct_ms", server.direct_url)):
        client = boto3.client("dynamodb", region_name=REGION, endpoint_url=url)
        client.list_tables()
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            client.get_item(TableName=CALIBRATION_TABLE, Key={"task_id": {"S": "none"}})
            times.append(time.perf_counter() - start)
        out[label] = statistics.median(times) * 1000
    return out


CALIBRATION_TABLE = "bench-calibration"


def moto_cpu_per_call(server: MotoServer, samples: int = 100) -> dict[str, float]:
    """moto's own CPU ms per DynamoDB write of each flavour, straight to moto: stock's result write
    (Celery's DynamoDB backend reads the item, then puts it) against the package's claim and result
    (conditional UpdateItems). moto evaluates expressions in Python, on the machine's CPUs."""
    from celery import Celery

    from celery_sqs_ddb import schema

    client = boto3.client("dynamodb", region_name=REGION, endpoint_url=server.direct_url)
    app = Celery("bench-calibration", set_as_current=False)
    app.conf.result_backend = f"ddb://{CALIBRATION_TABLE}?region={REGION}&endpoint_url={server.direct_url}"
    backend = app.backend
    ids = [uuid.uuid4().hex for _ in range(samples)]

    def stock(task_id: str) -> None:
        client.get_item(TableName=CALIBRATION_TABLE, Key={"task_id": {"S": task_id}})
        client.put_item(TableName=CALIBRATION_TABLE, Item={"task_id": {"S": task_id}, "result": {"S": "{}"}})

    def claim(task_id: str) -> None:
        backend.begin_run(task_id, owns_started=True)
        backend.claim(task_id, attempt=schema.attempt_key(0, 0, 1), message_id="m", worker="w@bench",
                      task_name="bench.stamp", queue="bench", retries=0, publish_started=True)  # track_started

    def result(task_id: str) -> None:
        backend.mark_as_done(task_id, ["w@bench", 1.0, 2.0, 0])
        backend.end_run()

    out = {}
    for label, call in (("stock GetItem + PutItem", stock), ("claim UpdateItem", claim),
                        ("result UpdateItem", result)):
        before = cpu_seconds([server.process.pid])
        for task_id in ids:
            call(task_id)
        out[label] = (cpu_seconds([server.process.pid]) - before) * 1000 / samples
    return out


def bulk(setup: Setup, tasks: int) -> dict[str, Any]:
    """(b)/(e) submit + join of ``tasks`` no-op tasks, with the calls and units they cost."""
    app = setup.app()
    noop = app.tasks["bench.noop"]
    setup.server.reset_counts()
    start = time.monotonic()
    if setup.stock:
        options = (lambda: {"MessageGroupId": uuid.uuid4().hex}) if setup.fifo else dict
        result = group(noop.s(i).set(**options()) for i in range(tasks)).apply_async()
    else:
        from celery_sqs_ddb import submit_many

        result = submit_many(noop, [(i,) for i in range(tasks)], progress=False)
    values = result.join(timeout=600)
    elapsed = time.monotonic() - start
    assert values == list(range(tasks)), "wrong results"
    time.sleep(1.5)  # batched deletes flush
    return {**measure(setup.server, tasks), "seconds": elapsed}


def latency(setup: Setup, samples: int) -> dict[str, Any]:
    """(c) sequential ``delay().get()`` round trips of a no-op task (one that returns where and when
    it ran, so the round trip splits into send-to-start, the run, and end-to-seen)."""
    stamp = setup.app().tasks["bench.stamp"]
    setup.server.reset_counts()
    times, to_start, to_seen = [], [], []
    for i in range(samples):
        sent, start = time.time(), time.perf_counter()
        _, began, ended, value = stamp.delay(i).get(timeout=60, **setup.get_options())
        times.append(time.perf_counter() - start)
        to_start.append(began - sent)
        to_seen.append(sent + times[-1] - ended)
        assert value == i
    time.sleep(1.5)
    result = measure(setup.server, samples)
    ordered = sorted(times)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]

    return {**result, "p50": pct(50), "p90": pct(90), "p99": pct(99), "mean": statistics.mean(times),
            "samples": times, "send_to_start_p50": statistics.median(to_start),
            "end_to_seen_p50": statistics.median(to_seen)}


def fifo_groups(setup: Setup, tasks: int = 20, seconds: float = 0.5) -> dict[str, Any]:
    """(d) ``tasks`` sleeps of ``seconds`` in as many groups, 2 workers x 1 process."""
    sleep = setup.app().tasks["bench.sleep"]
    setup.server.reset_counts()
    if setup.stock:
        results = [sleep.apply_async((seconds,), MessageGroupId=f"g{i}-{uuid.uuid4().hex[:6]}") for i in range(tasks)]
    else:
        results = [sleep.delay(seconds) for _ in range(tasks)]  # the package's default group: the task id
    spans = [r.get(timeout=300, **setup.get_options()) for r in results]
    measured = max(e for _, e in spans) - min(s for s, _ in spans)
    ideal = tasks * seconds / 2
    return {"measured_s": measured, "ideal_s": ideal, "efficiency": ideal / measured}


# --------------------------------------------------------------------------------------- costs


def cost(run: dict[str, Any], fifo: bool) -> dict[str, float]:
    """Per task: calls, SQS requests, write/read units (metered by the proxy) and USD per million tasks."""
    units, tasks = run["units"], run["tasks"]
    sqs_all = units.get("sqs:requests", 0)
    sqs_fifo = units.get("sqs:fifo_requests", 0)
    wru, rru = units.get("ddb:WRU", 0), units.get("ddb:RRU", 0)
    dollars = ((sqs_all - sqs_fifo) * PRICES["sqs_standard_per_million"] + sqs_fifo * PRICES["sqs_fifo_per_million"]
               + wru * PRICES["ddb_write_unit_per_million"] + rru * PRICES["ddb_read_unit_per_million"]) / tasks
    del fifo
    return {"calls": run["calls"] / tasks, "sqs": sqs_all / tasks, "wru": wru / tasks,
            "wru_table": units.get("ddb:WRU:table", 0) / tasks, "wru_index": units.get("ddb:WRU:index", 0) / tasks,
            "rru": rru / tasks, "usd_per_million": dollars,
            "usd_sqs": ((sqs_all - sqs_fifo) * PRICES["sqs_standard_per_million"]
                        + sqs_fifo * PRICES["sqs_fifo_per_million"]) / tasks,
            "usd_wru": wru * PRICES["ddb_write_unit_per_million"] / tasks,
            "usd_rru": rru * PRICES["ddb_read_unit_per_million"] / tasks}


# ------------------------------------------------------------------------------------------ run


def main() -> int:
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION=REGION,
                      AWS_DEFAULT_REGION=REGION)  # moto's; nothing here talks to real AWS
    os.environ.pop("BENCH_CLAIM", None)
    ARTIFACTS.mkdir(exist_ok=True)
    began = time.monotonic()
    r: dict[str, Any] = {"scale": SCALE, "started": datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), "load_start": os.getloadavg()}
    server = MotoServer(proxy_process=True)
    from celery_sqs_ddb import schema

    ours_table, stock_table = f"bench-ours-{uuid.uuid4().hex[:6]}", f"bench-stock-{uuid.uuid4().hex[:6]}"
    boto3.client("dynamodb", region_name=REGION, endpoint_url=server.direct_url).create_table(
        **schema.create_table_request(ours_table))
    tables = {"stock": stock_table, "sqs_ddb": ours_table}
    boto3.client("dynamodb", region_name=REGION, endpoint_url=server.direct_url).create_table(
        **schema.create_table_request(CALIBRATION_TABLE))
    try:
        r["call_latency"] = call_latency(server)
        log(f"one GetItem: {r['call_latency']}")
        r["moto_cpu_per_call"] = moto_cpu_per_call(server)
        log(f"moto CPU ms per write: {r['moto_cpu_per_call']}")
        # stock's backend creates its table on first use: once, before any worker starts
        Setup(server, "stock", table=stock_table).app().backend.client  # noqa: B018
        for flavor in ("stock", "sqs_ddb"):
            for prefetch in (4, 1):
                setup = Setup(server, flavor, prefetch=prefetch, table=tables[flavor])
                log(f"(a) throughput {flavor} prefetch {prefetch} ...")
                r[f"a_{flavor}_p{prefetch}"] = throughput(setup, n(400))
                log(f"    {r[f'a_{flavor}_p{prefetch}']['tasks_per_s']:.1f} tasks/s")
        for fifo in (False, True):
            kind = "fifo" if fifo else "standard"
            for flavor, claim in (("stock", None), ("sqs_ddb", None), ("sqs_ddb", "redelivery")):
                mode = "stock" if flavor == "stock" else ("lean" if claim else "default")
                setup = Setup(server, flavor, fifo=fifo, prefetch=4, claim=claim, table=tables[flavor])
                setup.start_workers()
                setup.warm_up()
                log(f"(b) submit + join {mode} {kind} ...")
                r[f"b_{mode}_{kind}"] = bulk(setup, n(200))
                log(f"    {r[f'b_{mode}_{kind}']['calls'] / n(200):.2f} calls/task")
                if not fifo and mode != "lean":
                    log(f"(c) round trips {mode} ...")
                    r[f"c_{mode}"] = latency(setup, n(200))
                    log(f"    p50 {r[f'c_{mode}']['p50'] * 1000:.0f} ms")
                setup.stop_workers()
        for flavor in ("stock", "sqs_ddb"):
            setup = Setup(server, flavor, fifo=True, prefetch=1, table=tables[flavor])
            setup.start_workers(2, 1)
            setup.warm_up()
            log(f"(d) FIFO 20 groups {flavor} ...")
            r[f"d_{flavor}"] = fifo_groups(setup)
            log(f"    {r[f'd_{flavor}']['measured_s']:.2f} s")
            setup.stop_workers()
    finally:
        server.stop()
    r["load_end"] = os.getloadavg()
    r["minutes"] = (time.monotonic() - began) / 60
    (ARTIFACTS / "bench.json").write_text(json.dumps(r, indent=1, default=str))
    if os.environ.get("BENCH_NO_DOCS"):
        print(json.dumps({k: v for k, v in r.items() if not k.startswith(("b_", "c_"))}, indent=1, default=str))
        return 0
    from benchmarks.report import write_all

    write_all(r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
