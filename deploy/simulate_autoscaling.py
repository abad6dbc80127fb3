"""Replay load curves against the autoscaling policy as written in deploy/terraform.

Parameters come from the HCL: the ``autoscaling`` module's variable defaults, overridden by
the arguments ``examples/complete`` passes to it. The model follows Application Auto Scaling:

- metrics are one-minute CloudWatch datapoints;
- target tracking on (visible + in-flight) / running tasks: scale out when 3 datapoints exceed
  the target (to ceil(backlog / target)), scale in when 15 datapoints are below 90 % of it,
  each direction with its cooldown; no data (0 running tasks) means no action;
- the from-zero alarm sets ``from_zero_capacity`` when jobs wait and no task runs;
- the to-zero alarm sets ``min_capacity`` after ``idle_minutes_to_zero`` empty minutes;
- a new task needs ``start_seconds`` (image pull, boot) before it takes jobs; each running
  task finishes one job every ``seconds_per_job``.

``python -m deploy.simulate_autoscaling [--plot docs/autoscaling.png]`` prints a summary of
each curve (and plots them when matplotlib is installed).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections import deque
from collections.abc import Callable

from deploy.hcl import MODULES, TERRAFORM, blocks, resources, unquote


@dataclasses.dataclass(frozen=True)
class Policy:
    min_capacity: int
    max_capacity: int
    acceptable_latency_seconds: float
    seconds_per_job: float
    scale_out_cooldown: int
    scale_in_cooldown: int
    from_zero_capacity: int
    idle_minutes_to_zero: int

    @property
    def target(self) -> float:
        """The module's local.target_backlog_per_task."""
        return max(1, math.floor(self.acceptable_latency_seconds / self.seconds_per_job))

    @classmethod
    def from_hcl(cls) -> Policy:
        values = {name: body.get("default") for name, body in blocks(MODULES / "autoscaling", "variable").items()}
        example = TERRAFORM / "examples" / "complete"
        from deploy.hcl import load

        for path in example.glob("*.tf"):
            for block in load(path).get("module", []):
                for name, body in block.items():
                    if unquote(name) == "autoscaling":
                        for key, value in unquote(body).items():
                            if key in values and not str(value).startswith("${"):
                                values[key] = value
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in fields})


@dataclasses.dataclass
class Run:
    minutes: list[int] = dataclasses.field(default_factory=list)
    backlog: list[float] = dataclasses.field(default_factory=list)
    running: list[int] = dataclasses.field(default_factory=list)
    desired: list[int] = dataclasses.field(default_factory=list)
    done: float = 0.0
    drained_at: int | None = None


def simulate(policy: Policy, arrivals: Callable[[int], float], minutes: int, start_seconds: int = 60) -> Run:
    """Minute-by-minute simulation; ``arrivals(minute)`` jobs arrive at the start of each minute."""
    run = Run()
    backlog = 0.0
    desired = policy.min_capacity
    running = policy.min_capacity
    starting: deque[tuple[int, int]] = deque()  # (ready at minute, count)
    last_out = last_in = -10**9
    high, low, idle = 0, 0, 0
    arrived = 0.0
    for minute in range(minutes):
        arrivals_now = arrivals(minute)
        arrived += arrivals_now
        backlog += arrivals_now
        while starting and starting[0][0] <= minute:
            running += starting.popleft()[1]
        peak = backlog  # CloudWatch's Maximum over the minute: the queue before this minute's work
        capacity = running * 60 / policy.seconds_per_job
        processed = min(backlog, capacity)
        backlog -= processed
        run.done += processed
        inflight = min(peak, running)
        # --- CloudWatch datapoint of this minute, then the alarms and policies
        metric = None if running == 0 else (peak + inflight) / running
        high = high + 1 if metric is not None and metric > policy.target else 0
        low = low + 1 if metric is not None and metric < 0.9 * policy.target else 0
        idle = idle + 1 if peak == 0 else 0
        now = minute * 60
        want = desired
        if high >= 3 and now - last_out >= policy.scale_out_cooldown:
            want = max(desired, math.ceil((backlog + inflight) / policy.target))
            last_out = now
        elif low >= 15 and now - last_in >= policy.scale_in_cooldown:
            want = min(desired, max(1, math.ceil((peak + inflight) / policy.target)))
            last_in = now
        if running + sum(c for _, c in starting) == 0 and backlog > 0:
            want = max(want, policy.from_zero_capacity)
        if idle >= policy.idle_minutes_to_zero:
            want = policy.min_capacity
        want = min(policy.max_capacity, max(policy.min_capacity, want))
        pending = sum(c for _, c in starting)
        if want > running + pending:
            starting.append((minute + max(1, math.ceil(start_seconds / 60)), want - running - pending))
        elif want < running:
            running = want  # idle tasks only: busy ones are scale-in protected until they finish
            starting.clear()
        desired = want
        run.minutes.append(minute)
        run.backlog.append(backlog)
        run.running.append(running)
        run.desired.append(desired)
        if run.drained_at is None and arrived > 0 and backlog == 0 and minute > 0:
            run.drained_at = minute
    return run


def burst(jobs: int = 10_000) -> Callable[[int], float]:
    return lambda minute: jobs if minute == 0 else 0


def trickle(per_second: float, until_minute: int) -> Callable[[int], float]:
    return lambda minute: per_second * 60 if minute < until_minute else 0


def idle() -> Callable[[int], float]:
    return lambda minute: 0


def predicted_drain_minutes(policy: Policy, jobs: int, start_seconds: int = 60) -> float:
    """Jobs / full fleet throughput, plus the ramp: from-zero start, 3 minutes of alarm, a start."""
    fleet_per_minute = policy.max_capacity * 60 / policy.seconds_per_job
    ramp = 1 + 3 + 2 * math.ceil(start_seconds / 60)
    return jobs / fleet_per_minute + ramp


def curves(policy: Policy) -> dict[str, Run]:
    return {
        "burst of 10,000 jobs": simulate(policy, burst(10_000), 180),
        "steady trickle 2 jobs/s for 60 min": simulate(policy, trickle(2, 60), 180),
        "idle": simulate(policy, idle(), 60),
    }


def plot(runs: dict[str, Run], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 3.2 * len(runs)), sharex=False)
    for ax, (title, run) in zip(axes, runs.items(), strict=True):
        ax.plot(run.minutes, run.backlog, label="backlog (jobs)", color="tab:blue")
        ax.set_ylabel("jobs")
        twin = ax.twinx()
        twin.step(run.minutes, run.running, where="post", label="running tasks", color="tab:orange")
        twin.set_ylabel("tasks")
        ax.set_title(title)
        ax.set_xlabel("minute")
        lines = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(lines, [line.get_label() for line in lines], loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", help="write a PNG of the runs (needs matplotlib)")
    args = parser.parse_args()
    policy = Policy.from_hcl()
    print(f"policy: {policy} (target backlog per task {policy.target})")
    runs = curves(policy)
    for title, run in runs.items():
        print(f"{title}: peak tasks {max(run.running)}, drained at minute {run.drained_at}, "
              f"final tasks {run.running[-1]}")
    print(f"predicted drain of the burst: {predicted_drain_minutes(policy, 10_000):.1f} min")
    if args.plot:
        plot(runs, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["Policy", "simulate", "burst", "trickle", "idle", "predicted_drain_minutes", "resources"]
