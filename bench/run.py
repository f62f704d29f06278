"""`make bench`: how fast, how lean and how busy target-userpilot is, printed as figures.

Seven measurements, all on input from ``bench/generate.py`` (warehouse-like users with nested
objects, arrays, date-times, decimals and nulls), all through the real target run as a
subprocess (``python -m target_userpilot``) against the local sandbox on loopback:

a. throughput against a do-nothing Singer SDK target (``bench/noop_target.py``) on the same
   input file, in the same run, with ``validate_records`` on (the default) and off, uploading to
   the sandbox and in a dry run;
b. peak memory (max RSS of the target process) at two input sizes;
c. job pacing with the sandbox processing at a fixed, scaled-up rate: how busy the sandbox is
   kept across a multi-job load, how soon a completed job is noticed, status polls per job;
d. rows sent per distinct profile: in-batch merge of repeated updates, and skip_unchanged;
e. a quiet stream (10 companies, then users in 1,000-row batches, the sandbox at 800 rows/s):
   time to the first STATE, STATE lag (from a record's arrival to the STATE covering it), run time;
f. a slow tap (users fed at 600/s, the sandbox able to take 1,000/s, 10 companies first): seconds
   from the last input line to the exit, how long the sandbox idled while rows waited in the
   target, rows per job, time to the first STATE;
g. a fast Userpilot (60,000 users, the sandbox far faster than ``rows_per_minute`` says): run time
   against the do-nothing target, how late job ends are noticed, status polls per job.

It prints figures and never judges them: timings depend on the machine. The figures are also
written to ``bench/results/latest.json``. ``--quick`` runs everything on small inputs, to check
that the benchmark itself works. ``--target-python`` runs another checkout's target (its
virtualenv's python) with this bench, sandbox and do-nothing target, for before/after figures;
``--only`` picks measurements and ``--flow-repeats`` repeats e to g, keeping the best run.
``--baseline REV`` adds an earlier commit's target to section a, side by side (``bench/baseline.py``
installs it once into ``.bench/REV``); `make bench` measures against f404c1e, the throughput of the
week before issue 24.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import baseline
import flow
import generate  # bench/ is on sys.path: run as `python bench/run.py`
from flow import API_KEY

from target_userpilot.sandbox import Sandbox

BENCH = Path(__file__).resolve().parent
#: What the target is told about an instantly answering sandbox. With the default 1,800 rows a
#: minute it would rightly wait about a second per job before its first status poll: pacing for
#: Userpilot, not work, and not what the throughput figure is about.
INSTANT_ROWS_PER_MINUTE = 1e9
USERPILOT_ROWS_PER_MINUTE = 1800


#: Spawns argv[2:] and writes its wall time and peak RSS (KiB, from wait4) to argv[1]. With -I
#: -S it stays a few MB, far below the process it measures.
_LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
with open(sys.argv[1], "w") as report:
    report.write(f"{seconds} {usage.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


@dataclass
class Sizes:
    """Input sizes; ``--quick`` shrinks them all."""

    throughput: int = 100_000
    repeats: int = 3
    memory: tuple[int, int] = (20_000, 160_000)
    pacing_batch: int = 2_000
    pacing: tuple[tuple[int, int], ...] = ((20_000, 600_000), (12_000, 30_000))
    repeated: tuple[int, int] = (9_000, 3_000)
    unchanged: tuple[int, int] = (4_000, 100)
    #: e. users after the companies, batch_size_rows, sandbox rows a minute (800 rows/s)
    quiet: tuple[int, int, int] = (8_000, 1_000, 48_000)
    #: e and f: the tap sends a STATE after every this many users
    state_every: int = 100
    #: f. users, users a second fed, sandbox rows a minute (1,000 rows/s)
    slow: tuple[int, int, int] = (6_000, 600, 60_000)
    #: g. users, sandbox rows a minute (the target keeps its default guess of 1,800)
    fast: tuple[int, int] = (60_000, 1_200_000)


QUICK = Sizes(
    throughput=5_000,
    repeats=1,
    memory=(2_000, 8_000),
    pacing_batch=500,
    pacing=((2_000, 600_000), (1_500, 30_000)),
    repeated=(900, 300),
    unchanged=(400, 10),
    quiet=(2_000, 500, 48_000),
    slow=(1_200, 600, 60_000),
    fast=(6_000, 1_200_000),
)

#: f. The feeder writes one chunk of users per tick: 30 users every 50 ms make 600 a second.
TICK_SECONDS = 0.05


@dataclass
class Run:
    """One finished process: wall time, peak memory and what it wrote to stderr."""

    seconds: float
    max_rss_mb: float
    stderr: str

    @property
    def summary(self) -> dict[str, Any]:
        """The target's ``TARGET_USERPILOT_SUMMARY`` line, parsed."""
        for line in reversed(self.stderr.splitlines()):
            if line.startswith("TARGET_USERPILOT_SUMMARY "):
                summary: dict[str, Any] = json.loads(line.split(" ", 1)[1])
                return summary
        raise RuntimeError("the target printed no summary line")


class Bench:
    """Runs the measurements in one scratch directory, against sandboxes on loopback."""

    def __init__(
        self,
        work: Path,
        sizes: Sizes,
        *,
        target_python: str,
        flow_repeats: int = 1,
        baseline: tuple[str, str] | None = None,
    ) -> None:
        self.work = work
        self.sizes = sizes
        #: The interpreter that runs ``-m target_userpilot``: this checkout's or another's.
        self.target_python = target_python
        self.flow_repeats = flow_repeats
        #: An earlier commit's target (its name and its virtualenv's python), measured in a.
        self.baseline = baseline
        self._configs = 0

    # Running processes

    def run(self, argv: list[str], input_path: Path) -> Run:
        """Run ``argv`` with ``input_path`` on stdin, measured by a small launcher process.

        A child's peak RSS as the kernel reports it includes the memory of the process that
        spawned it (the spawn shares or copies it until exec). This process holds sandboxes
        and their profiles, so a tiny launcher spawns the measured process instead.
        """
        report = self.work / "measure.txt"
        with input_path.open("rb") as stdin, tempfile.TemporaryFile(dir=self.work) as err:
            code = subprocess.run(
                [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(report), *argv],
                stdin=stdin,
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=self.work,
                check=False,
            ).returncode
            err.seek(0)
            stderr = err.read().decode(errors="replace")
        if code != 0:
            tail = "\n".join(stderr.splitlines()[-15:])
            raise RuntimeError(f"{argv[1:3]} exited with {code}:\n{tail}")
        seconds, max_rss_kb = report.read_text().split()
        return Run(float(seconds), int(max_rss_kb) / 1024, stderr)

    def target(self, config: dict[str, Any], input_path: Path) -> Run:
        """The real target, as a user runs it."""
        return self.run(self.target_argv(config), input_path)

    def target_argv(self, config: dict[str, Any], python: str | None = None) -> list[str]:
        """The command line of the target under test (or of ``python``'s), with ``config``
        written to a file."""
        python = python or self.target_python
        return [python, "-m", "target_userpilot", "--config", self.config(config)]

    def noop(self, config: dict[str, Any], input_path: Path) -> Run:
        """The do-nothing SDK target."""
        argv = [sys.executable, str(BENCH / "noop_target.py"), "--config", self.config(config)]
        return self.run(argv, input_path)

    def config(self, settings: dict[str, Any]) -> str:
        """Write ``settings`` to a new config file and return its path."""
        self._configs += 1
        path = self.work / f"config-{self._configs}.json"
        path.write_text(json.dumps(settings))
        return str(path)

    def input(self, name: str, records: Any) -> Path:
        """Write Singer input for ``records`` to a file of the scratch directory."""
        return generate.write(self.work / f"{name}.jsonl", records)

    # a. Throughput

    def throughput(self) -> dict[str, Any]:
        n = self.sizes.throughput
        path = self.input("throughput", generate.distinct_users(n))
        results: dict[str, Any] = {"records": n, "repeats": self.sizes.repeats}
        if self.baseline:
            results["baseline"] = self.baseline[0]
        with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0) as sandbox:
            base = _instant_config(sandbox)
            # The third pair takes the network out: a dry run does all of the target's work on
            # each record and batch, but writes files instead of waiting on the sandbox, which
            # shares this machine's two cores (Userpilot would not).
            dry_run = {"dry_run": True, "output_dir": str(self.work / "dry-run")}
            for label, extra, target_only in (
                ("validate_on", {}, {}),
                ("validate_off", {"validate_records": False}, {}),
                ("dry_run_validate_on", {}, dry_run),
                ("dry_run_validate_off", {"validate_records": False}, dry_run),
            ):
                runs: dict[str, list[Run]] = {"target": [], "noop": []}
                settings = {**base, **extra, **target_only}
                # Interleaved, so that a slower moment of the machine hits each alike.
                for _ in range(self.sizes.repeats):
                    runs["noop"].append(self.noop(extra, path))
                    runs["target"].append(self.target(settings, path))
                    sandbox.reset()
                    if self.baseline:
                        argv = self.target_argv(settings, python=self.baseline[1])
                        runs.setdefault("baseline", []).append(self.run(argv, path))
                        sandbox.reset()
                figures = {name: _rates(n, rs) for name, rs in runs.items()}
                figures["ratio_best"] = round(
                    figures["target"]["best_rps"] / figures["noop"]["best_rps"], 2
                )
                figures["ratio_median"] = round(
                    figures["target"]["median_rps"] / figures["noop"]["median_rps"], 2
                )
                # What the goals are stated in: the target's time as a share of the do-nothing
                # target's (medians), half with uploads and a third in a dry run.
                for name in ("target", "baseline"):
                    if name in figures:
                        figures[name]["time_share_median"] = round(
                            figures["noop"]["median_rps"] / figures[name]["median_rps"], 2
                        )
                figures["time_share_median"] = figures["target"]["time_share_median"]
                results[label] = figures
        return results

    # b. Memory

    def memory(self) -> dict[str, Any]:
        small, large = self.sizes.memory
        results: dict[str, Any] = {}
        with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0) as sandbox:
            config = _instant_config(sandbox)
            for n in (small, large):
                path = self.input(f"memory-{n}", generate.distinct_users(n))
                run = self.target(config, path)
                results[str(n)] = {"max_rss_mb": round(run.max_rss_mb, 1)}
                path.unlink()
                sandbox.reset()
        results["ratio"] = round(
            results[str(large)]["max_rss_mb"] / results[str(small)]["max_rss_mb"], 3
        )
        return results

    # c. Job pacing

    def pacing(self) -> list[dict[str, Any]]:
        batch = self.sizes.pacing_batch
        results = []
        for records, rate in self.sizes.pacing:
            path = self.input(f"pacing-{records}", generate.distinct_users(records))
            with Sandbox(port=0, api_key=API_KEY, rows_per_minute=rate) as sandbox:
                config = {
                    "api_url": sandbox.url,
                    "api_key": API_KEY,
                    "rows_per_minute": rate,
                    "batch_size_rows": batch,
                }
                run = self.target(config, path)
                stats = sandbox.stats()
            results.append(
                {
                    "records": records,
                    "batch_size_rows": batch,
                    "rows_per_minute": rate,
                    "speedup_vs_userpilot": round(rate / USERPILOT_ROWS_PER_MINUTE, 1),
                    "job_seconds": round(batch / rate * 60, 2),
                    "jobs": stats["jobs"],
                    "busy_share": stats["busy_share"],
                    "notice_delay_avg_s": stats["notice_delay_avg"],
                    "notice_delay_max_s": stats["notice_delay_max"],
                    "polls_per_job": stats["polls_per_job_avg"],
                    "own_conflicts": stats["conflicts_own"],
                    "seconds": round(run.seconds, 2),
                }
            )
        return results

    # d. Rows sent per profile

    def rows_per_profile(self) -> dict[str, Any]:
        records, users = self.sizes.repeated
        count, changed = self.sizes.unchanged
        results: dict[str, Any] = {}
        with Sandbox(port=0, api_key=API_KEY, rows_per_minute=0) as sandbox:
            config = _instant_config(sandbox)
            path = self.input("repeated", generate.repeated_updates(records, users))
            total = self.target(config, path).summary["total"]
            results["repeated_updates"] = {
                "records": records,
                "profiles": users,
                "rows_sent": total["rows_sent"],
                "merged": total["merged"],
                "rows_per_profile": round(total["rows_sent"] / users, 3),
            }
            skipping = {**config, "skip_unchanged": True, "state_db": str(self.work / "state.db")}
            first = self.input("unchanged", generate.distinct_users(count))
            second = self.input("some-changed", generate.some_changed(count, changed))
            runs = (("first_run", first), ("unchanged_rerun", first), ("changed_rerun", second))
            for label, path in runs:
                total = self.target(skipping, path).summary["total"]
                results[label] = {
                    "profiles": count,
                    "changed": {"first_run": count, "unchanged_rerun": 0}.get(label, changed),
                    "rows_sent": total["rows_sent"],
                    "unchanged_skipped": total["unchanged"],
                }
        return results

    # e. Quiet stream

    def quiet_stream(self) -> dict[str, Any]:
        """10 companies, then users fed as fast as the target reads: when does STATE come out?"""
        users, batch, rate = self.sizes.quiet
        chunks = [flow.opening_chunk(), *flow.user_chunks(users, self.sizes.state_every)]
        runs = []
        for _ in range(self.flow_repeats):
            with _started(Sandbox(port=0, api_key=API_KEY, rows_per_minute=rate)) as (sandbox, _):
                config = {"api_url": sandbox.url, "api_key": API_KEY, "batch_size_rows": batch}
                fed = flow.FedTarget(self.target_argv(config), self.work)
                try:
                    for chunk in chunks:
                        fed.send(chunk)
                    fed.finish()
                finally:
                    fed.kill()
                jobs = sandbox.stats()["job_timings"]
            assert fed.exited is not None
            runs.append(
                {
                    "first_state_s": _round(fed.first_state()),
                    "state_lag_s": flow.lag_figures(fed.state_lags()),
                    "run_seconds": round(fed.exited - fed.started, 2),
                    **flow.rows_per_job(jobs),
                }
            )
        best = min(runs, key=lambda run: run["run_seconds"])
        return {
            "companies": flow.COMPANIES,
            "users": users,
            "batch_size_rows": batch,
            "sandbox_rows_per_second": round(rate / 60),
            "runs": len(runs),
            "run_seconds_all": [run["run_seconds"] for run in runs],
            **best,
        }

    # f. Slow tap

    def slow_tap(self) -> dict[str, Any]:
        """Users fed slower than the sandbox takes them: does the sandbox idle while rows wait?"""
        users, per_second, rate = self.sizes.slow
        per_tick = max(1, round(per_second * TICK_SECONDS))
        opening = flow.opening_chunk()
        chunks = list(flow.user_chunks(users, per_tick))
        runs = []
        for _ in range(self.flow_repeats):
            with _started(Sandbox(port=0, api_key=API_KEY, rows_per_minute=rate)) as (
                sandbox,
                origin,
            ):
                config = {"api_url": sandbox.url, "api_key": API_KEY}
                fed = flow.FedTarget(self.target_argv(config), self.work)
                try:
                    fed.send(opening)
                    start = time.monotonic()
                    for tick, chunk in enumerate(chunks):
                        # The tap's own pace (a schedule, not a wait for a condition): behind
                        # it, the feeder catches up at once.
                        pause = start + tick * TICK_SECONDS - time.monotonic()
                        if pause > 0:
                            time.sleep(pause)
                        fed.send(chunk)
                    fed.finish()
                finally:
                    fed.kill()
                jobs = sandbox.stats()["job_timings"]
            assert fed.closed is not None and fed.exited is not None
            runs.append(
                {
                    "last_input_to_exit_s": round(fed.exited - fed.closed, 2),
                    **flow.idle_while_waiting(fed.sent, jobs, origin),
                    "first_state_s": _round(fed.first_state()),
                    "state_lag_s": flow.lag_figures(fed.state_lags()),
                    "run_seconds": round(fed.exited - fed.started, 2),
                    **flow.rows_per_job(jobs),
                }
            )
        best = min(runs, key=lambda run: run["last_input_to_exit_s"])
        return {
            "companies": flow.COMPANIES,
            "users": users,
            "users_per_second_in": per_second,
            "sandbox_rows_per_second": round(rate / 60),
            "runs": len(runs),
            "last_input_to_exit_all": [run["last_input_to_exit_s"] for run in runs],
            **best,
        }

    # g. Fast Userpilot

    def fast_userpilot(self) -> dict[str, Any]:
        """A sandbox far faster than the target's first guess: are job ends noticed at once?"""
        users, rate = self.sizes.fast
        path = self.input("fast", generate.distinct_users(users))
        targets: list[tuple[Run, dict[str, Any]]] = []
        noops: list[Run] = []
        with Sandbox(port=0, api_key=API_KEY, rows_per_minute=rate) as sandbox:
            # rows_per_minute stays at its default: the target must learn the pace.
            config = {"api_url": sandbox.url, "api_key": API_KEY}
            for _ in range(self.flow_repeats):
                noops.append(self.noop({}, path))
                sandbox.reset()
                run = self.target(config, path)
                targets.append((run, sandbox.stats()))
        path.unlink()
        run, stats = min(targets, key=lambda pair: pair[0].seconds)
        noop = min(run.seconds for run in noops)
        return {
            "users": users,
            "sandbox_rows_per_minute": rate,
            "target_rows_per_minute": USERPILOT_ROWS_PER_MINUTE,
            "runs": len(targets),
            "seconds_all": sorted(round(run.seconds, 2) for run, _ in targets),
            "seconds": round(run.seconds, 2),
            "noop_seconds": round(noop, 2),
            "ratio_to_noop": round(run.seconds / noop, 2),
            "jobs": stats["jobs"],
            "notice_delay_avg_s": stats["notice_delay_avg"],
            "notice_delay_max_s": stats["notice_delay_max"],
            "polls_per_job": stats["polls_per_job_avg"],
            "observed_rows_per_minute": run.summary.get("userpilot_rows_per_minute"),
        }


@contextmanager
def _started(sandbox: Sandbox) -> Iterator[tuple[Sandbox, float]]:
    """Start ``sandbox``; yields it and its origin (job timings count from it) on our clock."""
    origin = time.monotonic()  # start() restarts the sandbox's clock first thing
    with sandbox:
        yield sandbox, origin


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 2)


def _instant_config(sandbox: Sandbox) -> dict[str, Any]:
    """Target settings for a sandbox answering at once: no pacing of polls for Userpilot."""
    return {"api_url": sandbox.url, "api_key": API_KEY, "rows_per_minute": INSTANT_ROWS_PER_MINUTE}


def _rates(records: int, runs: list[Run]) -> dict[str, Any]:
    seconds = sorted(run.seconds for run in runs)
    return {
        "seconds": [round(s, 2) for s in seconds],
        "best_rps": round(records / seconds[0]),
        "median_rps": round(records / statistics.median(seconds)),
        "max_rss_mb": round(max(run.max_rss_mb for run in runs), 1),
    }


def render(figures: dict[str, Any]) -> str:
    """The compact table `make bench` prints, for the measurements that ran."""
    lines: list[str] = []
    for name, section in SECTIONS.items():
        if name in figures:
            section(figures[name], lines)
    return "\n".join(lines)


def _rower(lines: list[str]) -> Callable[..., None]:
    """A function that appends one aligned row (a label, then values) to ``lines``."""

    def row(*cells: str) -> None:
        label, *values = cells
        lines.append(("   " + f"{label:<38}" + "".join(f"{v:<26}" for v in values)).rstrip())

    return row


#: Section a's columns and their titles, in table order (older result files lack the third).
_THROUGHPUT_COLUMNS = {
    "validate_on": "validate_records on",
    "validate_off": "validate_records off",
    "dry_run_validate_on": "on, target in dry run",
    "dry_run_validate_off": "off, target in dry run",
}


def _render_throughput(t: Any, lines: list[str]) -> None:
    """a. Throughput."""
    row = _rower(lines)
    names = [name for name in _THROUGHPUT_COLUMNS if name in t]
    columns = [t[name] for name in names]
    lines.append(
        f"a. Throughput: {t['records']:,} records, best of {t['repeats']} (median), "
        "sandbox answering instantly"
    )
    row("", *(_THROUGHPUT_COLUMNS[name] for name in names))
    before = f"target at {t['baseline']}" if "baseline" in t else ""
    for name, title in (
        ("target", "target-userpilot"),
        ("baseline", before),
        ("noop", "do-nothing SDK target"),
    ):
        if name in columns[0]:
            row(title, *(_rps(f[name]) for f in columns))
    row(
        "target / do-nothing",
        *(f"{f['ratio_best']:.2f}x ({f['ratio_median']:.2f}x)" for f in columns),
    )
    row(
        "target's time, median (do-nothing 1)",
        *(f"{f['time_share_median']:.2f}" if "time_share_median" in f else "" for f in columns),
    )
    if "baseline" in t:
        row(
            f"{before}'s time, median",
            *(f"{f['baseline']['time_share_median']:.2f}" for f in columns),
        )
        lines.append(
            "   (goals of issue 24: the target's time at most 0.5 of the do-nothing target's "
            "uploading, 0.33 in a dry run)"
        )
    lines.append(
        "   (the target is told rows_per_minute=1e9: it need not pace its status polls for "
        "Userpilot's 1,800)"
    )


def _render_memory(m: Any, lines: list[str]) -> None:
    """b. Peak memory."""
    row = _rower(lines)
    small, large = (key for key in m if key != "ratio")
    lines.append("b. Peak memory (max RSS of the target process)")
    row(f"{int(small):,} records", f"{m[small]['max_rss_mb']:.1f} MB")
    row(f"{int(large):,} records", f"{m[large]['max_rss_mb']:.1f} MB")
    row(f"{int(large):,} / {int(small):,}", f"{m['ratio']:.3f}")


def _render_pacing(pacing: Any, lines: list[str]) -> None:
    """c. Job pacing."""
    row = _rower(lines)
    lines.append(
        "c. Job pacing: sandbox at a fixed rate, scaled up from Userpilot's 1,800 rows/min; "
        "target told that rate"
    )
    row("", *(f"{p['job_seconds']:g} s jobs" for p in pacing))
    row(
        "records in jobs of rows",
        *(f"{p['records']:,} in {p['jobs']} x {p['batch_size_rows']:,}" for p in pacing),
    )
    row(
        "rows/min (x Userpilot)",
        *(f"{p['rows_per_minute']:,} ({p['speedup_vs_userpilot']:.0f}x)" for p in pacing),
    )
    row("sandbox busy, first upload-last end", *(_percent(p["busy_share"]) for p in pacing))
    row(
        "completion noticed after avg/max",
        *(f"{_ms(p['notice_delay_avg_s'])} / {_ms(p['notice_delay_max_s'])}" for p in pacing),
    )
    row("status polls per job", *(f"{p['polls_per_job']:g}" for p in pacing))


def _render_rows(r: Any, lines: list[str]) -> None:
    """d. Rows sent per profile."""
    row = _rower(lines)
    rep = r["repeated_updates"]
    lines.append("d. Rows sent per distinct profile")
    row(
        f"{rep['records']:,} updates of {rep['profiles']:,} users",
        f"{rep['rows_sent']:,} rows",
        f"{rep['rows_per_profile']:g} per profile, {rep['merged']:,} merged",
    )
    first, same, changed = r["first_run"], r["unchanged_rerun"], r["changed_rerun"]
    row(f"skip_unchanged: {first['profiles']:,} users", f"{first['rows_sent']:,} rows", "first run")
    row(
        "  the same input again",
        f"{same['rows_sent']:,} rows",
        f"{same['unchanged_skipped']:,} skipped as unchanged",
    )
    row(
        f"  {changed['changed']:,} of {changed['profiles']:,} changed",
        f"{changed['rows_sent']:,} rows",
        f"{changed['unchanged_skipped']:,} skipped as unchanged",
    )


def _render_quiet(q: dict[str, Any], lines: list[str]) -> None:
    """e. Quiet stream."""
    row = _rower(lines)
    lines.append(
        f"e. Quiet stream: {q['companies']} companies, then {q['users']:,} users in "
        f"{q['batch_size_rows']:,}-row batches, sandbox at {q['sandbox_rows_per_second']:,} "
        f"rows/s (best of {q['runs']})"
    )
    row("first STATE after", _seconds(q["first_state_s"]))
    lag = q["state_lag_s"]
    row("STATE lag, max / median", f"{lag['max']:.2f} s / {lag['median']:.2f} s")
    row("run time", f"{q['run_seconds']:.2f} s", f"{q['jobs']} jobs")


def _render_slow(f: dict[str, Any], lines: list[str]) -> None:
    """f. Slow tap."""
    row = _rower(lines)
    lines.append(
        f"f. Slow tap: {f['companies']} companies, then {f['users']:,} users at "
        f"{f['users_per_second_in']:,}/s; sandbox takes {f['sandbox_rows_per_second']:,} rows/s "
        f"(best of {f['runs']})"
    )
    row("last input line to exit", f"{f['last_input_to_exit_s']:.2f} s")
    row(
        "sandbox idle while rows waited",
        f"{f['idle_seconds']:.2f} s of {f['waiting_seconds']:.2f} s",
        _percent(f["idle_share"]),
    )
    row("  longest of those idle stretches", f"{f['longest_idle_seconds']:.2f} s")
    row("jobs, median rows per job", f"{f['jobs']}", f"{f['median_rows']:,.0f} rows")
    row("first STATE after", _seconds(f["first_state_s"]))
    lag = f["state_lag_s"]
    row("STATE lag, max / median", f"{lag['max']:.2f} s / {lag['median']:.2f} s")


def _render_fast(g: dict[str, Any], lines: list[str]) -> None:
    """g. Fast Userpilot."""
    row = _rower(lines)
    lines.append(
        f"g. Fast Userpilot: {g['users']:,} users, sandbox at {g['sandbox_rows_per_minute']:,} "
        f"rows/min, target left at its guess of {g['target_rows_per_minute']:,} "
        f"(best of {g['runs']})"
    )
    row("run time / do-nothing SDK target", f"{g['seconds']:.2f} s / {g['noop_seconds']:.2f} s")
    row("run time over do-nothing's", f"{g['ratio_to_noop']:.2f}x")
    row(
        "completion noticed after avg/max",
        f"{_ms(g['notice_delay_avg_s'])} / {_ms(g['notice_delay_max_s'])}",
    )
    polls = g["polls_per_job"]
    row("status polls per job", "n/a" if polls is None else f"{polls:g}", f"{g['jobs']} jobs")
    observed = g["observed_rows_per_minute"]
    row("rate the target observed", "n/a" if observed is None else f"{observed:,.0f} rows/min")


#: Each measurement's name, in the order they run and print, and how it prints.
SECTIONS: dict[str, Callable[[Any, list[str]], None]] = {
    "throughput": _render_throughput,
    "memory": _render_memory,
    "pacing": _render_pacing,
    "rows": _render_rows,
    "quiet": _render_quiet,
    "slow": _render_slow,
    "fast": _render_fast,
}


def _rps(f: dict[str, Any]) -> str:
    return f"{f['best_rps']:,} rec/s ({f['median_rps']:,})"


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{share * 100:.1f}%"


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


def _seconds(seconds: float | None) -> str:
    return "never, before the exit" if seconds is None else f"{seconds:.2f} s"


def main(argv: list[str] | None = None) -> int:
    """Run the measurements, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, to test the bench")
    parser.add_argument(
        "--output", type=Path, default=BENCH / "results" / "latest.json", help="JSON figures"
    )
    parser.add_argument(
        "--target-python",
        default=sys.executable,
        help="python that runs `-m target_userpilot` (another checkout's .venv/bin/python)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also measure commit REV's target in section a, side by side (installed once "
        "into .bench/REV)",
    )
    parser.add_argument(
        "--only", nargs="+", choices=list(SECTIONS), help="run these measurements only"
    )
    parser.add_argument(
        "--flow-repeats", type=int, default=1, help="runs of e, f and g each; the best is kept"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    before = None
    if args.baseline and (args.only is None or "throughput" in args.only):
        try:
            before = (args.baseline, str(baseline.ensure(args.baseline)))
        except baseline.BaselineUnavailable as unavailable:
            print(f"measuring without a baseline: {unavailable}", file=sys.stderr)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="target-userpilot-bench-") as work:
        bench = Bench(
            Path(work),
            sizes,
            target_python=args.target_python,
            flow_repeats=max(1, args.flow_repeats),
            baseline=before,
        )
        measures = {
            "throughput": bench.throughput,
            "memory": bench.memory,
            "pacing": bench.pacing,
            "rows": bench.rows_per_profile,
            "quiet": bench.quiet_stream,
            "slow": bench.slow_tap,
            "fast": bench.fast_userpilot,
        }
        figures: dict[str, Any] = {}
        for name in args.only or SECTIONS:
            print(f"measuring {name}...", file=sys.stderr, flush=True)
            figures[name] = measures[name]()
    figures["machine"] = {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "target_python": args.target_python,
        "bench_seconds": round(time.perf_counter() - started, 1),
    }
    print(render(figures))
    print(f"({figures['machine']['bench_seconds']:.0f} s; figures in {args.output})")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
