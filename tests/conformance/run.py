"""Run celery's own integration suite (``t/integration`` of the sdist of the installed celery) against
this package: SQS broker and ``ddb://`` backend on a fresh moto server, celery's session worker.

    python -m tests.conformance.run                      # the four files, then docs/conformance.md
    python -m tests.conformance.run test_tasks.py        # one file (its earlier records are replaced)
    python -m tests.conformance.run test_canvas.py -k chord --no-report   # a subset, for debugging

Each file runs in its own pytest process with ``tests/conformance/plugin.py``. A test that exceeds
``--timeout`` fails (pytest-timeout) and ends that process; one that hangs past the timeout plus a
grace period is killed by the watchdog here. Either way the runner starts a new process (new moto
server, new worker) for the tests not yet run, so a hang costs one test, not the rest of the file.
Records: ``test-artifacts/conformance/<file>.jsonl``; merged ``junit.xml`` beside them; the report
(``tests/conformance/report.py``) is written from that junit XML.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "test-artifacts" / "conformance"
FILES = ("test_tasks.py", "test_backend.py", "test_inspect.py", "test_canvas.py")
WATCHDOG_GRACE = 60.0  #: seconds past the per-test timeout before the process is killed
IDLE_LIMIT = 240.0  #: seconds a process may spend outside any test (setup, teardown) before it is killed

#: Tests that cannot pass on SQS + ddb:// for a reason outside this package, each with its reason.
#: Only Redis/RabbitMQ-only features and SQS's one PurgeQueue per 60 s belong here.
PURGE = ("calls manager.wait_until_idle() {n} in one test; its control.purge() is SQS PurgeQueue, which AWS "
         "allows once per 60 s per queue (PurgeQueueInProgress)")
EXPECTED: dict[str, str] = {
    "t/integration/test_tasks.py::test_tasks::test_revoked_by_headers_complex_canvas": PURGE.format(n="twice"),
    "t/integration/test_canvas.py::test_chain::test_chord_header_id_duplicated_on_rabbitmq_msg_duplication"
    "[redis-group-ids]": "emulates RabbitMQ redelivering a message and reads the chord header ids back from a "
                         "Redis list (tasks.redis_echo_group_id): needs a Redis server",
}

#: Failures whose cause is diagnosed but which are not expected failures: they stay failures in the
#: counts; the report shows the diagnosis next to the error.
MOTO_DEPTH = ("1000 tasks within 60 s on the suite's one worker process; moto 5.2.5's ReceiveMessage "
              "recomputes every queue attribute for each message it returns (O(queue depth)): measured "
              "~12 tasks/s with 1000 queued, vs 16.7 needed; real SQS is not depth-bound")
MOTO_TRANSACT = ("a chord of 1000 parts within 60 s; each part is counted with one TransactWriteItems, "
                 "and moto 5.2.5 deep-copies the whole table for every item of a transaction (measured "
                 "20 ms a call with 1,000 items in the table, 64 ms with 3,000; an UpdateItem is 1.3 ms), so "
                 "the parts slow down as the suite's table fills; DynamoDB's cost does not depend on table size")
DIAGNOSED: dict[str, str] = {
    "t/integration/test_inspect.py::test_Inspect::test_active": (
        "asserts acknowledged=True of a running task (Celery's default acks before the body); "
        "broker_settings() sets task_acks_late=True, under which Celery reports False too"),
    "t/integration/test_inspect.py::test_Inspect::test_query_task": (
        "the same acknowledged=True assertion as test_active (task_acks_late=True)"),
    "t/integration/test_tasks.py::test_task_replacement::test_replaced_task_nesting_level_0": (
        "a race in the test: it sets assertion_result = False after delay() returns, so when the suite's "
        "in-process worker receives the task first (its thread holds the GIL) the handler's True is "
        "overwritten; passes in most runs"),
    "t/integration/test_canvas.py::test_group::test_large_group": MOTO_DEPTH,
    "t/integration/test_canvas.py::test_chord::test_large_header": MOTO_TRANSACT,
    "t/integration/test_canvas.py::test_chord::test_chain_to_a_chord_with_large_header": MOTO_TRANSACT,
}


def celery_version() -> str:
    import celery

    return celery.__version__


def sdist(version: str) -> Path:
    """The extracted ``t/`` (and pytest config) of celery's sdist for ``version``, downloaded once."""
    target = WORK / f"celery-{version}"
    if (target / "t" / "integration" / "conftest.py").exists():
        return target
    download = WORK / "download"
    download.mkdir(parents=True, exist_ok=True)
    archive = download / f"celery-{version}.tar.gz"
    if not archive.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        f"celery=={version}", "-d", str(download)], check=True)
    prefix = f"celery-{version}/"
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        # only the tests and the pytest config: not celery's source, so the installed celery is what runs
        members = [m for m in tar.getmembers()
                   if m.name.startswith((prefix + "t/", prefix + "pyproject.toml")) and (m.isfile() or m.isdir())]
        for member in members:
            member.name = member.name[len(prefix):]
        tar.extractall(target, members=members, filter="data")
    return target


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill
            continue
    return events


def run_file(name: str, tree: Path, timeout: float, keyword: str | None, tag: str) -> float:
    """Run one file to the end, in as many pytest processes as hangs require; returns seconds taken."""
    events_path = WORK / f"{tag}.jsonl"
    events_path.unlink(missing_ok=True)
    log_path = WORK / f"{tag}.log"  # process N writes {tag}.N.log
    log_path.unlink(missing_ok=True)
    started = time.monotonic()
    remaining: list[str] | None = None  # None: the whole file (first process)
    attempt = 0
    first_collected: list[str] = []
    while True:
        attempt += 1
        args = [f"t/integration/{name}"] if remaining is None else remaining
        command = [sys.executable, "-m", "pytest", "-p", "tests.conformance.plugin", "-p", "celery.contrib.pytest",
                   "-p", "no:cacheprovider", "-o", "addopts=--strict-markers", "-vv", "-rA", "--color=no",
                   f"--log-file={log_path.with_suffix(f'.{attempt}.log')}", "--log-file-level=INFO",
                   "--log-file-format=%(asctime)s %(levelname)s %(name)s %(threadName)s: %(message)s", *args]
        if keyword and remaining is None:
            command += ["-k", keyword]
        # WORKER_LOGLEVEL=INFO as celery's own tox.ini sets it (test_trace_log_arguments reads INFO records)
        env = dict(os.environ, CONFORMANCE_EVENTS=str(events_path), CONFORMANCE_TIMEOUT=str(timeout),
                   WORKER_LOGLEVEL=os.environ.get("WORKER_LOGLEVEL", "INFO"),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        with open(WORK / f"{tag}.out", "a") as out:
            out.write(f"\n===== process {attempt}: {' '.join(command[:12])} ... ({len(args)} args)\n")
            out.flush()
            process = subprocess.Popen(command, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            killed = watch(process, events_path, timeout)
        events = read_events(events_path)
        collected = next((e["nodeids"] for e in events if e["event"] == "collected"), [])
        finished = {e["nodeid"] for e in events if e["event"] == "finish"}
        if killed:
            with open(events_path, "a") as fh:
                fh.write(json.dumps({"event": "report", "nodeid": killed, "when": "call", "outcome": "failed",
                                     "duration": timeout + WATCHDOG_GRACE, "skip_reason": None, "wasxfail": None,
                                     "longrepr": f"killed by the conformance watchdog: no result "
                                                 f"{timeout + WATCHDOG_GRACE:.0f} s after the test started "
                                                 "(pytest-timeout did not end it)"}) + "\n")
                fh.write(json.dumps({"event": "restart", "nodeid": killed, "time": time.time(),
                                     "reason": "the test process hung and was killed"}) + "\n")
                fh.write(json.dumps({"event": "finish", "nodeid": killed, "time": time.time()}) + "\n")
            finished.add(killed)
        if remaining is None:
            first_collected = collected
        remaining = [nodeid for nodeid in collected if nodeid not in finished]
        print(f"{name}: process {attempt} exited {process.returncode}; {len(finished)}/{len(collected)} done",
              flush=True)
        if not remaining or not collected:
            stale = [k for k in EXPECTED if k.startswith(f"t/integration/{name}::") and k not in first_collected]
            if stale and not keyword:
                print(f"{name}: EXPECTED names tests that do not exist: {', '.join(stale)}", flush=True)
            return time.monotonic() - started


def watch(process: subprocess.Popen[bytes], events_path: Path, timeout: float) -> str | None:
    """Wait for ``process``; kill its process group if a test (or setup/teardown) hangs. Returns the
    node id of the test it killed, if any."""
    while process.poll() is None:
        time.sleep(2)
        events = read_events(events_path)
        current, since = None, time.time()
        for event in events:
            if event["event"] == "start":
                current, since = event["nodeid"], event["time"]
            elif event["event"] == "finish":
                current, since = None, event["time"]
        if not events:
            since = process_started(process)
        limit = timeout + WATCHDOG_GRACE if current else IDLE_LIMIT
        if time.time() - since > limit:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return current
    return None


_started: dict[int, float] = {}


def process_started(process: subprocess.Popen[bytes]) -> float:
    return _started.setdefault(process.pid, time.time())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", help=f"files of t/integration (default: {' '.join(FILES)})")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression (records kept apart, no report)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per test (pytest-timeout)")
    parser.add_argument("--no-report", action="store_true", help="do not write docs/conformance.md")
    parser.add_argument("--note", default="", help="a line for the report's header (e.g. 'branch run')")
    options = parser.parse_args(argv)
    files = options.files or list(FILES)
    version = celery_version()
    WORK.mkdir(parents=True, exist_ok=True)
    tree = sdist(version)
    if not options.files and not options.keyword:  # the whole run: no records of an earlier one
        for stale in WORK.glob("test_*.jsonl"):
            stale.unlink()
    took: dict[str, float] = {}
    for name in files:
        tag = ("debug-" if options.keyword else "") + name.removesuffix(".py")
        took[name] = run_file(name, tree, options.timeout, options.keyword, tag)
        print(f"{name}: {took[name]:.0f} s", flush=True)
    from tests.conformance import report

    times = report.load_times(WORK)
    times.update(took)
    report.save_times(WORK, times)
    junit = WORK / "junit.xml"
    report.write_junit(WORK, junit, EXPECTED)
    if not options.keyword and not options.no_report:
        out = ROOT / "docs" / "conformance.md"
        out.write_text(report.markdown(junit, version=version, times=times, note=options.note,
                                       diagnosed=DIAGNOSED))
        print(f"wrote {out.relative_to(ROOT)}")
    print(report.summary(junit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
