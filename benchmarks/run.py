"""``make bench``: this package against stock Celery (kombu SQS + ``dynamodb://``), side by side
in one run, on one moto server behind a counting proxy. Writes docs/benchmarks.md and
docs/benchmarks.png.

Scenarios (same worker count and concurrency for both flavours):

1. throughput: 1,000 trivial tasks submitted then joined, standard and FIFO queue;
2. latency: 200 sequential ``delay().get()`` round trips, p50/p90/p99;
3. AWS calls per task by action and request cost per million tasks (list prices below);
4. FIFO parallel efficiency: 2 workers x 1 process, 20 tasks of 0.5 s: ideal / measured;
5. scale: 10,000 tasks through ``submit_many`` with 4 worker processes, worker RSS at start and end.

Run a smaller version with ``BENCH_SCALE=0.2 make bench``.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
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
REGION = "eu-west-1"
SCALE = float(os.environ.get("BENCH_SCALE", "1"))

#: AWS list prices used for the cost column (us-east-1, on-demand, checked 2026-11; requests
#: beyond the free tier). SQS bills each 64 KiB chunk of a request as one request.
PRICES = {
    "sqs_standard_per_million": 0.40,
    "sqs_fifo_per_million": 0.50,
    "ddb_write_unit_per_million": 0.625,
    "ddb_read_unit_per_million": 0.125,
}


def n(count: int) -> int:
    return max(10, int(count * SCALE))


class Flavor:
    def __init__(self, name: str, server: MotoServer, fifo: bool) -> None:
        self.name = name
        self.server = server
        self.fifo = fifo
        suffix = uuid.uuid4().hex[:6]
        self.queue = f"bench-{name.replace('_', '-')}-{suffix}" + (".fifo" if fifo else "")
        self.table = f"bench-{suffix}"
        sqs = boto3.client("sqs", region_name=REGION, endpoint_url=server.direct_url)
        attributes = {"FifoQueue": "true"} if fifo else {}
        self.url = sqs.create_queue(QueueName=self.queue, Attributes=attributes)["QueueUrl"]
        self.url = self.url.replace(server.direct_url, server.url)
        if name == "sqs_ddb":
            from celery_sqs_ddb import schema

            ddb = boto3.client("dynamodb", region_name=REGION, endpoint_url=server.direct_url)
            ddb.create_table(**schema.create_table_request(self.table))
        self.workers: list[subprocess.Popen] = []

    def env(self, prefetch: int = 1) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_FLAVOR": self.name, "BENCH_ENDPOINT": self.server.url,
                "BENCH_QUEUE": self.queue, "BENCH_QUEUE_URL": self.url, "BENCH_TABLE": self.table,
                "BENCH_PREFETCH": str(prefetch), "BENCH_WAIT": "1" if self.fifo else "20", "AWS_REGION": REGION,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing"}

    def app(self, prefetch: int = 1) -> Any:
        os.environ.update(self.env(prefetch))
        from benchmarks.app import make_app

        return make_app()

    def start_workers(self, count: int, concurrency: int, prefetch: int = 1) -> None:
        for i in range(count):
            log = open(ROOT / "test-artifacts" / f"bench-{self.name}-{i}.log", "w")  # noqa: SIM115
            self.workers.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "benchmarks.app", "worker", "-l", "warning", "-c",
                 str(concurrency), "-n", f"{self.name}{i}@%h", "--without-heartbeat", "--without-gossip",
                 "--without-mingle"], env=self.env(prefetch), cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT))
        app = self.app(prefetch)
        deadline = time.monotonic() + 60
        while True:  # ready when a round trip works
            try:
                app.tasks["bench.noop"].delay(0).get(timeout=10)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
        time.sleep(1)

    def stop_workers(self) -> None:
        for proc in self.workers:
            proc.terminate()
        for proc in self.workers:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.workers.clear()

    def rss_mb(self) -> float:
        total = 0
        for proc in self.workers:
            pids = [proc.pid] + [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                                                 text=True).stdout.split()]
            for pid in pids:
                try:
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
                except FileNotFoundError:
                    pass
        return total / 1024


def throughput(flavor: Flavor, tasks: int) -> dict[str, Any]:
    app = flavor.app(prefetch=4)
    noop = app.tasks["bench.noop"]
    flavor.server.reset_counts()
    start = time.monotonic()
    if flavor.name == "sqs_ddb":
        from celery_sqs_ddb import submit_many

        result = submit_many(noop, [(i,) for i in range(tasks)], progress=False)
    else:
        result = group(noop.s(i) for i in range(tasks)).apply_async()
    values = result.join(timeout=900)
    elapsed = time.monotonic() - start
    assert values == list(range(tasks)), "wrong results"
    time.sleep(1.5)
    return {"tasks_per_s": tasks / elapsed, "seconds": elapsed, "counts": flavor.server.counts()}


def latency(flavor: Flavor, samples: int) -> dict[str, Any]:
    app = flavor.app()
    noop = app.tasks["bench.noop"]
    times = []
    flavor.server.reset_counts()
    for i in range(samples):
        start = time.perf_counter()
        assert noop.delay(i).get(timeout=60) == i
        times.append(time.perf_counter() - start)
    time.sleep(1.5)
    times.sort()

    def pct(p: float) -> float:
        return times[min(len(times) - 1, math.ceil(p / 100 * len(times)) - 1)]

    return {"p50": pct(50), "p90": pct(90), "p99": pct(99), "mean": statistics.mean(times), "samples": times,
            "counts": flavor.server.counts()}


def fifo_efficiency(flavor: Flavor, tasks: int = 20, seconds: float = 0.5) -> dict[str, Any]:
    app = flavor.app()
    sleep = app.tasks["bench.sleep"]
    results = [sleep.delay(seconds) for _ in range(tasks)]
    spans = [r.get(timeout=300) for r in results]
    measured = max(e for _, e in spans) - min(s for s, _ in spans)
    ideal = tasks * seconds / 2
    return {"measured_s": measured, "ideal_s": ideal, "efficiency": ideal / measured}


def cost_per_million(counts: dict[str, int], tasks: int, fifo: bool, flavor: str) -> dict[str, float]:
    """Request cost of one million tasks from the calls counted (model in docs/benchmarks.md)."""
    sqs_requests = sum(v for k, v in counts.items() if k.startswith("sqs:") and "#" not in k)
    ddb = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("dynamodb:")}
    if flavor == "sqs_ddb":
        # claim: 1 WRU + the item enters/moves in the index (QUEUED -> STARTED: 2 index writes);
        # result: 1 WRU + a move in the index (2); a QUEUED row: 1 WRU + 1 index write.
        wru = ddb.get("UpdateItem", 0) * 3 + ddb.get("BatchWriteItem#items", 0) * 2
        rru = ddb.get("GetItem", 0) * 1 + ddb.get("BatchGetItem#items", 0) * 1 + ddb.get("Query", 0) * 0.5
    else:
        wru = ddb.get("PutItem", 0) * 1 + ddb.get("UpdateItem", 0)
        rru = ddb.get("GetItem", 0) * 0.5 + ddb.get("BatchGetItem#items", 0) * 0.5
    sqs_price = PRICES["sqs_fifo_per_million"] if fifo else PRICES["sqs_standard_per_million"]
    per_task = {"sqs": sqs_requests / tasks, "wru": wru / tasks, "rru": rru / tasks}
    dollars = (per_task["sqs"] * sqs_price + per_task["wru"] * PRICES["ddb_write_unit_per_million"]
               + per_task["rru"] * PRICES["ddb_read_unit_per_million"])
    return {**per_task, "usd_per_million_tasks": dollars}


def calls_per_task(counts: dict[str, int], tasks: int) -> dict[str, float]:
    return {k: v / tasks for k, v in sorted(counts.items()) if "#" not in k}


def main() -> int:
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION=REGION,
                      AWS_DEFAULT_REGION=REGION)  # moto's; nothing here talks to real AWS
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    server = MotoServer()
    results: dict[str, Any] = {"scale": SCALE}
    try:
        for fifo in (False, True):
            kind = "fifo" if fifo else "standard"
            for name in ("stock", "sqs_ddb"):
                flavor = Flavor(name, server, fifo)
                flavor.start_workers(2, 2, prefetch=4)
                print(f"[{name} {kind}] throughput ...", flush=True)
                results[f"throughput_{kind}_{name}"] = throughput(flavor, n(1000))
                if not fifo:
                    print(f"[{name}] latency ...", flush=True)
                    results[f"latency_{name}"] = latency(flavor, n(200))
                flavor.stop_workers()
        for name in ("stock", "sqs_ddb"):
            flavor = Flavor(name, server, fifo=True)
            flavor.start_workers(2, 1)
            print(f"[{name}] FIFO efficiency ...", flush=True)
            results[f"fifo_{name}"] = fifo_efficiency(flavor)
            flavor.stop_workers()
        flavor = Flavor("sqs_ddb", server, fifo=False)
        flavor.start_workers(1, 4, prefetch=4)
        start_rss = flavor.rss_mb()
        print("[sqs_ddb] scale ...", flush=True)
        scale = throughput(flavor, n(10_000))
        results["scale_sqs_ddb"] = {"tasks": n(10_000), "tasks_per_s": scale["tasks_per_s"],
                                    "rss_start_mb": start_rss, "rss_end_mb": flavor.rss_mb()}
        flavor.stop_workers()
    finally:
        server.stop()
    (ROOT / "test-artifacts" / "bench.json").write_text(json.dumps(results, indent=1, default=str))
    write_report(results)
    return 0


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b else "n/a"


def target_cell(percentile: str, speedup: float) -> str:
    if percentile != "p50":
        return ""
    return "≥ 5x: " + ("met" if speedup >= 5 else "missed")


def write_report(r: dict[str, Any]) -> None:
    lines = [
        "# Benchmarks: celery_sqs_ddb vs stock Celery",
        "",
        f"Generated by `make bench` on {datetime.date.today().isoformat()} "
        f"(scale {r['scale']}; `BENCH_SCALE=0.2 make bench` for a quick run). One moto server "
        f"(moto 5.2.5, the local AWS) behind a counting proxy; both flavours in the same run with the same "
        f"workers (2 workers x 2 processes, prefetch 4 unless noted). Stock = kombu 5.7 SQS transport + Celery "
        f"5.7 `dynamodb://`. Machine: {platform.platform()}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs.",
        "",
        "Absolute numbers are moto's, not AWS's (moto answers in about a millisecond and long polls",
        "differently); the ratios and the call counts are what carries over. FIFO scenarios use a 1 s long",
        "poll for both flavours: moto's FIFO long poll keeps a stale list of in-flight groups and would",
        "otherwise hold every hand-over of stock Celery's single group for the whole 20 s wait.",
        "",
        "![benchmarks](benchmarks.png)",
        "",
        "| scenario | stock Celery | celery_sqs_ddb | ratio | target |",
        "|---|---:|---:|---:|---|",
    ]
    targets = []
    for kind, target in (("standard", 3), ("fifo", 5)):
        s, o = r[f"throughput_{kind}_stock"]["tasks_per_s"], r[f"throughput_{kind}_sqs_ddb"]["tasks_per_s"]
        met = o / s >= target
        targets.append((f"throughput {kind} ≥ {target}x", met, o / s))
        lines.append(f"| throughput, {kind} queue (tasks/s) | {s:.1f} | {o:.1f} | {ratio(o, s)} | "
                     f"≥ {target}x: {'met' if met else 'missed'} |")
    ls, lo = r["latency_stock"], r["latency_sqs_ddb"]
    for p in ("p50", "p90", "p99"):
        lines.append(f"| round trip {p} (ms) | {ls[p] * 1000:.0f} | {lo[p] * 1000:.0f} | "
                     f"{ratio(ls[p], lo[p])} faster | {target_cell(p, ls[p] / lo[p])} |")
    targets.append(("latency p50 ≥ 5x lower", ls["p50"] / lo["p50"] >= 5, ls["p50"] / lo["p50"]))
    fs, fo = r["fifo_stock"], r["fifo_sqs_ddb"]
    lines.append(f"| FIFO efficiency, 2 workers, 20 x 0.5 s (ideal 5 s) | {fs['efficiency']:.0%} "
                 f"({fs['measured_s']:.1f} s) | {fo['efficiency']:.0%} ({fo['measured_s']:.1f} s) | "
                 f"{ratio(fo['efficiency'], fs['efficiency'])} | "
                 f"≥ 90 %: {'met' if fo['efficiency'] >= 0.9 else 'missed'} |")
    targets.append(("FIFO efficiency ≥ 90 %", fo["efficiency"] >= 0.9, fo["efficiency"]))
    tasks = n(1000)
    cs = r["throughput_standard_stock"]["counts"]
    co = r["throughput_standard_sqs_ddb"]["counts"]
    calls_s = sum(v for k, v in cs.items() if "#" not in k) / tasks
    calls_o = sum(v for k, v in co.items() if "#" not in k) / tasks
    lines.append(f"| AWS calls per task (bulk, standard) | {calls_s:.2f} | {calls_o:.2f} | "
                 f"{ratio(calls_s, calls_o)} fewer | ≤ 2.5: {'met' if calls_o <= 2.5 else 'missed'} |")
    targets.append(("calls per task ≤ 2.5", calls_o <= 2.5, calls_o))
    cost_s = cost_per_million(cs, tasks, False, "stock")
    cost_o = cost_per_million(co, tasks, False, "sqs_ddb")
    lines.append(f"| request cost per million tasks (USD) | {cost_s['usd_per_million_tasks']:.2f} | "
                 f"{cost_o['usd_per_million_tasks']:.2f} | "
                 f"{ratio(cost_s['usd_per_million_tasks'], cost_o['usd_per_million_tasks'])} | |")
    sc = r["scale_sqs_ddb"]
    lines += [
        "",
        f"Scale: {sc['tasks']:,} tasks through `submit_many` with one worker of 4 processes: "
        f"{sc['tasks_per_s']:.0f} tasks/s; worker RSS (main + children) {sc['rss_start_mb']:.0f} MB at start, "
        f"{sc['rss_end_mb']:.0f} MB at the end.",
        "",
        "## AWS calls per task, by action (throughput run, standard queue)",
        "",
        "| action | stock | celery_sqs_ddb |",
        "|---|---:|---:|",
    ]
    per_s, per_o = calls_per_task(cs, tasks), calls_per_task(co, tasks)
    for action in sorted(set(per_s) | set(per_o)):
        lines.append(f"| {action} | {per_s.get(action, 0):.3f} | {per_o.get(action, 0):.3f} |")
    lines += [
        "",
        "## Cost model",
        "",
        f"Prices (us-east-1, on-demand, checked 2026-11): SQS ${PRICES['sqs_standard_per_million']:.2f} per million "
        f"requests (standard), ${PRICES['sqs_fifo_per_million']:.2f} (FIFO), each 64 KiB chunk a request (all "
        f"messages here are under 64 KiB, so a batch call is one request); DynamoDB on-demand "
        f"${PRICES['ddb_write_unit_per_million']:.3f} per million write request units, "
        f"${PRICES['ddb_read_unit_per_million']:.3f} per million read request units.",
        "",
        "Request units per call (items under 1 KB): stock PutItem 1 WRU, GetItem 0.5 RRU (eventually consistent). "
        "celery_sqs_ddb: each UpdateItem (claim or result) 1 WRU on the table + 2 index writes (the item "
        "moves in the status index: a delete and a put), each QUEUED row 1 WRU + 1 index write, consistent "
        "GetItem/BatchGetItem 1 RRU per item. The status index is what the extra write units buy: stock "
        "cannot answer \"which jobs are running?\" at any price.",
        "",
        "| per task | stock | celery_sqs_ddb |",
        "|---|---:|---:|",
        f"| SQS requests | {cost_s['sqs']:.2f} | {cost_o['sqs']:.2f} |",
        f"| DynamoDB write units | {cost_s['wru']:.2f} | {cost_o['wru']:.2f} |",
        f"| DynamoDB read units | {cost_s['rru']:.2f} | {cost_o['rru']:.2f} |",
        "",
        "## Targets",
        "",
    ]
    for label, met, value in targets:
        lines.append(f"- {label}: {'met' if met else 'MISSED'} ({value:.2f})")
    lines += [
        "",
        "Where a target is missed, the reason is in docs/benchmarks-notes.md (kept by hand, next to this",
        "generated file).",
        "",
        "Command: `make bench` (writes this file, docs/benchmarks.png and test-artifacts/bench.json).",
    ]
    (DOCS / "benchmarks.md").write_text("\n".join(lines) + "\n")
    plot(r)
    print("\n".join(lines))


def plot(r: dict[str, Any]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    labels = ["standard", "FIFO"]
    stock = [r["throughput_standard_stock"]["tasks_per_s"], r["throughput_fifo_stock"]["tasks_per_s"]]
    ours = [r["throughput_standard_sqs_ddb"]["tasks_per_s"], r["throughput_fifo_sqs_ddb"]["tasks_per_s"]]
    x = range(len(labels))
    left.bar([i - 0.2 for i in x], stock, 0.4, label="stock Celery")
    left.bar([i + 0.2 for i in x], ours, 0.4, label="celery_sqs_ddb")
    left.set_xticks(list(x), labels)
    left.set_ylabel("tasks/s")
    left.set_title(f"Throughput ({n(1000):,} trivial tasks)")
    left.legend()
    for name, label in (("stock", "stock Celery"), ("sqs_ddb", "celery_sqs_ddb")):
        samples = sorted(r[f"latency_{name}"]["samples"])
        right.plot([s * 1000 for s in samples], [i / len(samples) for i in range(len(samples))], label=label)
    right.set_xlabel("delay().get() round trip (ms)")
    right.set_ylabel("fraction of calls")
    right.set_title("Round-trip latency (CDF)")
    right.legend()
    fig.tight_layout()
    fig.savefig(DOCS / "benchmarks.png", dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
