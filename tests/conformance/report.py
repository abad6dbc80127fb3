"""Records of a conformance run -> junit XML -> ``docs/conformance.md``.

    python -m tests.conformance.report      # rewrite junit.xml and docs/conformance.md from the records
"""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "test-artifacts" / "conformance"
ORDER = ("test_tasks.py", "test_backend.py", "test_inspect.py", "test_canvas.py")
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


def load_times(work: Path) -> dict[str, float]:
    path = work / "times.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_times(work: Path, times: dict[str, float]) -> None:
    (work / "times.json").write_text(json.dumps(times, indent=2))


def reason_of(text: str | None) -> str:
    """One line out of a failure's long representation: the first ``E`` line, else the last line."""
    if not text:
        return ""
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line[1:].strip() for line in lines if line.startswith("E ")]
    line = errors[0] if errors else (lines[-1] if lines else "")
    return line if len(line) <= 240 else line[:237] + "..."


def results(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Node id -> {outcome, reason, duration, text} from one file's events."""
    out: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.get("event") == "restart" and event["nodeid"] in out:
            out[event["nodeid"]]["restart"] = event["reason"]
        if event.get("event") != "report":
            continue
        entry = out.setdefault(event["nodeid"], {"outcome": "passed", "reason": "", "duration": 0.0, "text": ""})
        entry["duration"] += event.get("duration") or 0.0
        outcome, when, xfail = event["outcome"], event["when"], event.get("wasxfail")
        if outcome == "failed":
            if entry["outcome"] in ("failed", "error"):
                continue
            entry["outcome"] = "failed" if when == "call" else "error"
            entry["reason"] = (f"[{when}] " if when != "call" else "") + reason_of(event.get("longrepr"))
            entry["text"] = event.get("longrepr") or ""
        elif outcome == "skipped":
            entry["outcome"] = "xfailed" if xfail is not None else "skipped"
            entry["reason"] = xfail if xfail is not None else (event.get("skip_reason") or "")
        elif outcome == "passed" and xfail is not None and when == "call":
            entry["outcome"] = "xpassed"
            entry["reason"] = xfail
    return out


def write_junit(work: Path, path: Path, expected: dict[str, str]) -> None:
    from tests.conformance.run import read_events

    suites = ET.Element("testsuites")
    for records in sorted(work.glob("test_*.jsonl"), key=lambda p: _order(p.stem + ".py")):
        name = records.stem + ".py"
        found = results(read_events(records))
        suite = ET.SubElement(suites, "testsuite", name=name)
        counts = dict.fromkeys(OUTCOMES, 0)
        for nodeid, entry in found.items():
            counts[entry["outcome"]] += 1
            module, _, rest = nodeid.partition("::")
            classname, _, test = rest.rpartition("::")
            case = ET.SubElement(suite, "testcase", file=module, name=test or rest,
                                 classname=module.removesuffix(".py").replace("/", ".") + ("." + classname
                                                                                           if classname else ""),
                                 time=f"{entry['duration']:.3f}")
            outcome = entry["outcome"]
            if outcome in ("failed", "error"):
                child = ET.SubElement(case, "failure" if outcome == "failed" else "error", message=entry["reason"])
                child.text = entry["text"]
            elif outcome == "skipped":
                ET.SubElement(case, "skipped", type="pytest.skip", message=entry["reason"])
            elif outcome == "xfailed":
                ET.SubElement(case, "skipped", type="pytest.xfail", message=entry["reason"])
            props = ET.SubElement(case, "properties")
            if outcome == "xpassed":
                ET.SubElement(props, "property", name="xpassed", value=entry["reason"])
            if entry.get("restart"):
                ET.SubElement(props, "property", name="restart", value=entry["restart"])
            if not len(props):
                case.remove(props)
        suite.set("tests", str(len(found)))
        suite.set("failures", str(counts["failed"]))
        suite.set("errors", str(counts["error"]))
        suite.set("skipped", str(counts["skipped"] + counts["xfailed"]))
    ET.indent(suites)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def _order(name: str) -> int:
    return ORDER.index(name) if name in ORDER else len(ORDER)


def read_junit(path: Path) -> list[tuple[str, list[dict[str, str]]]]:
    """[(file, [{id, outcome, reason, time}])] from a junit XML written by :func:`write_junit` (or pytest)."""
    files = []
    for suite in ET.parse(path).getroot().iter("testsuite"):
        cases = []
        for case in suite.iter("testcase"):
            classname = case.get("classname", "")
            parts = classname.split(".")
            module = case.get("file") or "/".join(parts[:3]) + ".py"
            klass = ".".join(parts[3:])
            test_id = f"{module}::{klass + '::' if klass else ''}{case.get('name')}"
            outcome, reason, restart = "passed", "", ""
            for child in case:
                if child.tag in ("failure", "error"):
                    outcome, reason = ("failed" if child.tag == "failure" else "error"), child.get("message", "")
                elif child.tag == "skipped":
                    outcome = "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
                    reason = child.get("message", "")
                elif child.tag == "properties":
                    for prop in child:
                        if prop.get("name") == "xpassed":
                            outcome, reason = "xpassed", prop.get("value", "")
                        elif prop.get("name") == "restart":
                            restart = prop.get("value", "")
            cases.append({"id": test_id, "outcome": outcome, "reason": reason, "time": case.get("time", "0"),
                          "restart": restart})
        files.append((suite.get("name", ""), cases))
    return files


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", text).replace("|", "\\|").strip()


def _branch() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def markdown(junit: Path, *, version: str, times: dict[str, float], note: str = "",
             diagnosed: dict[str, str] | None = None) -> str:
    files = read_junit(junit)
    diagnosed = diagnosed or {}
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Conformance: Celery's own integration tests on SQS + `ddb://`",
        "",
        f"Celery {version}'s `t/integration` files (from its sdist, as installed) run by `make conformance`",
        "against this package on a fresh moto server: `celery_sqs_ddb.broker_settings(['celery'], region=...,",
        "endpoint_url=..., dead_letter_queue=..., remote_control=True, track_started=False)` (Celery's",
        "default, which the suite assumes) and `result_backend = 'ddb://...'`,",
        "Celery's session worker (prefork, concurrency 1) in the test process, no reruns,",
        "a per-test timeout (pytest-timeout) and a watchdog that goes on in a new process after a hang.",
        "Runner: `tests/conformance/run.py`; expected failures (`EXPECTED` there) are only",
        "Redis/RabbitMQ-only features and SQS's one PurgeQueue per 60 s, each with its reason.",
        "",
        f"Run: {today}, branch `{_branch()}`" + (f"; {note}" if note else "") + ".",
        "",
        "How the run differs from Celery's own CI (RabbitMQ + Redis):",
        "",
        "- The settings are the package's defaults, not Celery's: `broker_settings()` sets `task_acks_late`,",
        "  `worker_prefetch_multiplier=1` and JSON only (`track_started` is passed off, Celery's default);",
        "  tests that assert Celery's defaults (a running task `acknowledged`) see the difference.",
        "- `Manager.wait_until_idle` (the `manager` fixture's teardown) purges the queue first; SQS allows one",
        "  PurgeQueue per 60 s, so the runner's copy of that helper goes on to the wait for idle when SQS",
        "  answers PurgeQueueInProgress (`tests/conformance/plugin.py`). Nothing of Celery or this package",
        "  is patched.",
        "- `WORKER_LOGLEVEL=INFO` as in Celery's tox setup; pytest-rerunfailures is not installed, so the",
        "  `flaky` marks rerun nothing; every test's timeout is capped (pytest-timeout, signal method).",
        "- `azure-core` is installed so that `test_backend.py` (Azure Blob only) imports and skips by itself.",
        "- moto is used directly (not through the test suite's counting proxy, which adds ~40 ms per call).",
        "",
        "Run it: `make conformance` (all four files, then this page), or one file:",
        "`.venv/bin/python -m tests.conformance.run test_canvas.py` (its records replace that file's only);",
        "`-k EXPR` for a subset (kept apart, no page). Records, logs and junit XML: `test-artifacts/conformance/`.",
        "",
        "| file | passed | failed | errors | skipped | xfailed | xpassed | time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    total = dict.fromkeys(OUTCOMES, 0)
    for name, cases in files:
        counts = dict.fromkeys(OUTCOMES, 0)
        for case in cases:
            counts[case["outcome"]] += 1
            total[case["outcome"]] += 1
        took = times.get(name)
        shown = f"{took / 60:.1f} min" if took is not None else "?"
        lines.append(f"| {name} | " + " | ".join(str(counts[o]) for o in OUTCOMES) + f" | {shown} |")
    whole = sum(times.get(name, 0.0) for name, _ in files)
    lines.append("| **total** | " + " | ".join(f"**{total[o]}**" for o in OUTCOMES) + f" | {whole / 60:.1f} min |")
    lines += ["", "## Tests that did not pass", "",
              "Failures are open bugs or gaps of this package unless listed as expected (xfailed);",
              "a diagnosed failure (`DIAGNOSED` in the runner) still counts as a failure.",
              "Skips are Celery's own (a backend or environment a test requires).", "",
              "| test | outcome | reason |", "|---|---|---|"]
    for _, cases in files:
        for case in cases:
            if case["outcome"] != "passed":
                reason = case["reason"]
                if case["outcome"] in ("failed", "error") and case["id"] in diagnosed:
                    reason = f"{reason} **Diagnosis:** {diagnosed[case['id']]}"
                lines.append(f"| `{case['id']}` | {case['outcome']} | {_cell(reason)} |")
    restarts = [case for _, cases in files for case in cases if case.get("restart")]
    if restarts:
        lines += ["", "## Restarts", "",
                  "After these tests the runner went on in a new process (new moto server, new worker):", "",
                  "| test | why |", "|---|---|"]
        lines += [f"| `{case['id']}` | {_cell(case['restart'])} |" for case in restarts]
    return "\n".join(lines) + "\n"


def summary(junit: Path) -> str:
    out = []
    for name, cases in read_junit(junit):
        counts = dict.fromkeys(OUTCOMES, 0)
        for case in cases:
            counts[case["outcome"]] += 1
        out.append(f"{name}: " + ", ".join(f"{counts[o]} {o}" for o in OUTCOMES if counts[o]))
    return "\n".join(out)


def main() -> int:
    import celery

    from tests.conformance.run import DIAGNOSED, EXPECTED

    junit = WORK / "junit.xml"
    write_junit(WORK, junit, EXPECTED)
    out = ROOT / "docs" / "conformance.md"
    note = sys.argv[1] if len(sys.argv) > 1 else ""
    out.write_text(markdown(junit, version=celery.__version__, times=load_times(WORK), note=note,
                                 diagnosed=DIAGNOSED))
    print(summary(junit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
