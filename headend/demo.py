"""`gridhead demo`: the whole collection chain on one machine in about a minute, as steps.

1. ``archive``  — a small synthetic fleet (storage.generator via headend.sim_model: N concentrators ×
   M meters, 698 and 645 meters, archive start ``days`` days ago) imported into ``DATA/archive.duckdb``;
2. ``collect``  — the head-end (this process) listening on 127.0.0.1 and the simulated fleet (a
   subprocess, ``python -m headend.demo fleet``) dialling in with faults (dropped answers, offline
   spells, frozen data the concentrators lack); the daily frozen task collects every day since the
   start, then back-fill (补采) re-reads the gaps per meter;
3. ``report``   — what happened: terminals online, readings stored, success rate (采集成功率) before
   and after back-fill, where the lake is, an example ``gridhead sql`` query.

Each step is ``fn(ctx) -> dict`` and adds its part to the summary (``--json`` prints it whole).  Later
issues (billing, line loss) append their steps to :data:`STEPS`: they read ``ctx["data"]`` (the data
directory, whose lake and archive this demo leaves in place).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

from protocols.errors import GridheadError

from . import collect as C

MARKER = ".gridhead-demo"
DEFAULT_DATA = "gridhead-demo"
DEFAULT_FAULTS = {"drop": 0.02, "missing": 0.05, "missing_late": 0.0, "offline": 0.03, "offline_s": 3.0}


class DemoError(GridheadError):
    """The demo cannot run (a data directory that is not a demo's, the fleet did not start)."""


@dataclasses.dataclass
class Step:
    name: str
    run: object          # fn(ctx) -> dict
    title: str


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def today_local() -> _dt.date:
    from storage import schema
    return _dt.datetime.now(schema.LOCAL_TZ).date()


# --- the fleet in its own process --------------------------------------------------------------------------
def fleet_command(data, port: int, *, seed: int = 1, faults: dict | None = None, heartbeat_s: int = 60,
                  host: str = "127.0.0.1") -> list[str]:
    """The command line of a simulated fleet for the fleet of ``data`` (its archive-files and ground
    truth), dialling ``host:port``; used by the demo, the fleet tests and the benchmark."""
    f = ",".join(f"{k}={v}" for k, v in (faults or {}).items())
    return [sys.executable, "-m", "headend.demo", "fleet", str(data), host, str(port), str(seed), str(heartbeat_s), f]


def start_fleet(data, port: int, **kw) -> subprocess.Popen:
    return subprocess.Popen(fleet_command(data, port, **kw), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop_process(p: subprocess.Popen, timeout_s: float = 5.0) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _fleet_main(argv) -> None:
    """``python -m headend.demo fleet DATA HOST PORT SEED HEARTBEAT_S FAULTS``: run until SIGTERM."""
    from . import sim_model, simulator
    data, host, port, seed, hb, faults = argv
    fleet = sim_model.load_gen_dir(data)
    sim = simulator.Simulator(fleet, seed=int(seed), connect=(host, int(port)), heartbeat_s=int(hb),
                              faults=simulator.Faults.parse([x for x in faults.split(",") if x]),
                              report=False)
    simulator.run(sim)


# --- steps --------------------------------------------------------------------------------------------------
def step_archive(ctx) -> dict:
    from storage import archive, sql
    from . import sim_model
    data = ctx["data"]
    # the archive starts the day before the first collected day; the last collected day is today: its
    # 00:00 freeze is in the concentrators' records and is a DL/T 645 meter's 上1次日冻结
    start = today_local() - _dt.timedelta(days=ctx["days"])
    t0 = time.perf_counter()
    sim_model.write_standalone_archive(data, ctx["terminals"], ctx["meters_per_terminal"], ctx["seed"], start)
    with archive.Archive(sql.archive_path(data)) as a:
        counts = a.import_files(sorted((data / "archive-files").glob("*.csv")))
    ctx["start"] = start
    return {"archive": str(sql.archive_path(data)), "start": start.isoformat(), "terminals": counts["concentrators"],
            "meters": counts["meters"], "seconds": round(time.perf_counter() - t0, 2)}


def step_collect(ctx) -> dict:
    data = ctx["data"]
    start = ctx["start"]
    days = [start + _dt.timedelta(days=i) for i in range(1, ctx["days"] + 1)]
    port = _free_port()
    fleet = start_fleet(data, port, seed=ctx["seed"], faults=ctx["faults"], heartbeat_s=ctx["heartbeat_s"])
    tasks = [dataclasses.replace(t, backfill_retries=ctx["retries"], backfill_delay_s=ctx["backfill_delay_s"],
                                 timeout_s=ctx["timeout_s"]) for t in C.DEFAULT_TASKS if t.name == "daily-frozen"]
    try:
        out = asyncio.run(C.serve_and_collect(
            data, days, port=port, tasks=tasks, seed=ctx["seed"], wait_s=ctx["wait_s"],
            config={"request_retries": 0}))
    finally:
        stop_process(fleet)
    if fleet.returncode not in (0, -signal.SIGTERM) and out.get("online_at_start", 0) == 0:
        raise DemoError(f"the simulated fleet exited with {fleet.returncode}: "
                        f"{fleet.stderr.read().decode(errors='replace').strip().splitlines()[-1:]}")
    out["days"] = [d.isoformat() for d in days]
    out["faults"] = ctx["faults"]
    return out


def step_report(ctx) -> dict:
    from storage import sql
    data = ctx["data"]
    c = ctx["summary"]["collect"]
    with sql.Session(data) as s:
        n = s.query("SELECT count(*) AS n FROM readings").column("n")[0].as_py()
    q = ("SELECT date, sum(expected) AS expected, sum(collected) AS collected, "
         "round(100.0 * sum(collected) / sum(expected), 2) AS success_pct FROM collection GROUP BY date ORDER BY date")
    return {"lake": str(sql.lake_root(data).resolve()), "readings_in_lake": n,
            "success_first_pct": c["before"]["success_first_pct"],
            "success_pct": c.get("after", c["before"])["success_pct"],
            "next": f"gridhead sql --data {data} \"{q}\""}


STEPS: list[Step] = [
    Step("archive", step_archive, "generate and import the archive"),
    Step("collect", step_collect, "head-end + simulated fleet: collect, back-fill"),
    Step("report", step_report, "what is in the lake"),
]


def prepare_dir(data: pathlib.Path) -> None:
    """Start from an empty demo directory: one a previous demo left is emptied, any other must be empty."""
    if data.exists() and any(data.iterdir()):
        if not (data / MARKER).exists():
            raise DemoError(f"{data} exists and is not a gridhead demo directory: give --data a new or empty one")
        shutil.rmtree(data)
    data.mkdir(parents=True, exist_ok=True)
    (data / MARKER).write_text("made by gridhead demo; `gridhead demo` empties it\n")


def run(data=DEFAULT_DATA, *, terminals: int = 10, meters_per_terminal: int = 32, days: int = 3, seed: int = 1,
        faults: dict | None = None, heartbeat_s: int = 2, retries: int = 3, backfill_delay_s: float = 1.0,
        timeout_s: float = 3.0, wait_s: float = 20.0, steps=None, echo=None) -> dict:
    """Run the demo's steps; ``echo(line)`` gets a line per step.  Returns the summary (step -> dict)."""
    data = pathlib.Path(data)
    prepare_dir(data)
    ctx = {"data": data, "terminals": terminals, "meters_per_terminal": meters_per_terminal, "days": days,
           "seed": seed, "faults": DEFAULT_FAULTS if faults is None else faults, "heartbeat_s": heartbeat_s,
           "retries": retries, "backfill_delay_s": backfill_delay_s, "timeout_s": timeout_s, "wait_s": wait_s,
           "summary": {}}
    for step in steps or STEPS:
        t0 = time.perf_counter()
        if echo:
            echo(f"[{step.name}] {step.title} ...")
        out = step.run(ctx)
        out.setdefault("seconds", round(time.perf_counter() - t0, 2))
        ctx["summary"][step.name] = out
    return ctx["summary"]


def render(summary: dict) -> str:
    """The human summary of a demo run."""
    a, c, r = summary["archive"], summary["collect"], summary["report"]
    b, af = c["before"], c.get("after", c["before"])
    lines = [
        f"archive    {a['terminals']} concentrators, {a['meters']} meters, start {a['start']} -> {a['archive']}",
        f"fleet      {c['online_at_start']}/{c['terminals']} terminals online at collection start; "
        f"faults {', '.join(f'{k}={v}' for k, v in c['faults'].items()) or 'none'}",
        f"collected  days {c['days'][0]} .. {c['days'][-1]}: {c['requests']} requests "
        f"({c['failed_requests']} failed), {c['readings_stored']} readings stored "
        f"({c['readings_backfilled']} by back-fill) in {c['seconds']} s",
        f"success    {b['success_first_pct']}% after the first pass ({b['first_pass']}/{b['expected']} meter-days), "
        f"{af['success_pct']}% after back-fill ({af['collected']}/{af['expected']}; {af['missing']} still missing)",
        f"lake       {r['lake']} ({r['readings_in_lake']} readings)",
        f"next       {r['next']}",
    ]
    extra = [k for k in summary if k not in ("archive", "collect", "report")]
    lines += [f"{k:<10} {json.dumps(summary[k], default=str)}" for k in extra]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "fleet":
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        _fleet_main(sys.argv[2:])
    else:
        sys.exit("usage: python -m headend.demo fleet DATA HOST PORT SEED HEARTBEAT_S FAULTS")
