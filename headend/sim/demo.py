"""`gridhead demo`: the whole chain on one machine in about a minute, as steps.

1. ``archive``  — a small synthetic fleet (storage.generator via headend.sim.model: N concentrators ×
   M meters, 698 and 645 meters, archive start the day before the first collected day) imported into
   ``DATA/archive.duckdb``;
2. ``collect``  — the head-end (this process) listening on 127.0.0.1 and the simulated fleet (a
   subprocess, ``python -m gridhead.headend.sim.demo fleet``) dialling in with faults (dropped answers, offline
   spells, frozen data the concentrators lack); the daily frozen task collects the last ``days`` days
   and the freezes at both ends of last month (its 1st and this month's 1st, 00:00), then back-fill
   (补采) re-reads the gaps per meter;
3. ``report``   — what happened: terminals online, readings stored, success rate (采集成功率) before
   and after back-fill, where the lake is;
4. ``bill``     — last month's bills (电费核算, billing_core.jobs.bills): issued, held with reasons, totals;
5. ``lineloss`` — that month's line loss (线损) per area and feeder, stored in the lake, and the audit
   list (稽查) ranked from it;
6. ``prepay``   — the prepayment loop (预付费) through a head-end running its control API: a customer
   runs out, is tripped, pays and is reconnected, the relay read back each time, all in the audit log;
7. ``next``     — the commands to run next on what the demo left.

Each step is ``fn(ctx) -> dict`` and adds its part to the summary (``--json`` prints it whole).  A later
step goes into :data:`STEPS` before ``next``: it reads ``ctx["data"]`` (the data directory, whose lake
and archive this demo leaves in place), ``ctx["period"]`` (last month) and ``ctx["recent_days"]``.
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
import threading
import time

from gridhead.protocols.errors import GridheadError

from gridhead.headend import collect
from gridhead.headend.server import serve_and_collect
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
    from gridhead.storage import schema
    return _dt.datetime.now(schema.LOCAL_TZ).date()


def month_ends(today: _dt.date) -> tuple[str, tuple[_dt.date, _dt.date]]:
    """The last complete month before ``today`` as ``YYYY-MM`` and its freezes at both ends (the 1st of
    that month and of the next, 00:00): what its bill and its line loss read."""
    end = today.replace(day=1)
    first = (end - _dt.timedelta(days=1)).replace(day=1)
    return f"{first:%Y-%m}", (first, end)


# --- the fleet in its own process --------------------------------------------------------------------------
def fleet_command(data, port: int, *, seed: int = 1, faults: dict | None = None, heartbeat_s: int = 60,
                  host: str = "127.0.0.1") -> list[str]:
    """The command line of a simulated fleet for the fleet of ``data`` (its archive-files and ground
    truth), dialling ``host:port``; used by the demo, the fleet tests and the benchmark."""
    f = ",".join(f"{k}={v}" for k, v in (faults or {}).items())
    return [sys.executable, "-m", "gridhead.headend.sim.demo", "fleet", str(data), host, str(port), str(seed), str(heartbeat_s), f]


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
    """``python -m gridhead.headend.sim.demo fleet DATA HOST PORT SEED HEARTBEAT_S FAULTS``: run until SIGTERM."""
    from . import model as sim_model, simulator
    data, host, port, seed, hb, faults = argv
    fleet = sim_model.load_gen_dir(data)
    sim = simulator.Simulator(fleet, seed=int(seed), connect=(host, int(port)), heartbeat_s=int(hb),
                              faults=simulator.Faults.parse([x for x in faults.split(",") if x]),
                              report=False)
    simulator.run(sim)


# --- steps --------------------------------------------------------------------------------------------------
def step_archive(ctx) -> dict:
    from gridhead.storage import archive, sql
    from . import model as sim_model
    data = ctx["data"]
    # the archive starts the day before the first collected day; the last collected day is today: its
    # 00:00 freeze is in the concentrators' records and is a DL/T 645 meter's 上1次日冻结.  The first
    # collected day is at the latest the 1st of last month: the bill and line-loss steps need that
    # month's freezes at both ends (the 1st of last month and of this month, 00:00)
    today = today_local()
    ctx["period"], ctx["month_ends"] = month_ends(today)
    start = min(today - _dt.timedelta(days=ctx["days"] - 1), ctx["month_ends"][0]) - _dt.timedelta(days=1)
    t0 = time.perf_counter()
    sim_model.write_standalone_archive(data, ctx["terminals"], ctx["meters_per_terminal"], ctx["seed"], start)
    with archive.Archive(sql.archive_path(data)) as a:
        counts = a.import_files(sorted((data / "archive-files").glob("*.csv")))
    ctx["start"] = start
    return {"archive": str(sql.archive_path(data)), "start": start.isoformat(), "period": ctx["period"],
            "terminals": counts["concentrators"], "meters": counts["meters"], "customers": counts.get("customers", 0),
            "seconds": round(time.perf_counter() - t0, 2)}


def step_collect(ctx) -> dict:
    data = ctx["data"]
    today = today_local()
    recent = [today - _dt.timedelta(days=i) for i in range(ctx["days"] - 1, -1, -1)]
    days = sorted(set(recent) | set(ctx["month_ends"]))
    ctx["recent_days"] = recent
    port = _free_port()
    fleet = start_fleet(data, port, seed=ctx["seed"], faults=ctx["faults"], heartbeat_s=ctx["heartbeat_s"])
    tasks = [dataclasses.replace(t, backfill_retries=ctx["retries"], backfill_delay_s=ctx["backfill_delay_s"],
                                 timeout_s=ctx["timeout_s"]) for t in collect.DEFAULT_TASKS if t.name == "daily-frozen"]
    try:
        out = asyncio.run(serve_and_collect(
            data, days, port=port, tasks=tasks, seed=ctx["seed"], wait_s=ctx["wait_s"],
            config={"request_retries": 0}))
    finally:
        stop_process(fleet)
    if fleet.returncode not in (0, -signal.SIGTERM) and out.get("online_at_start", 0) == 0:
        raise DemoError(f"the simulated fleet exited with {fleet.returncode}: "
                        f"{fleet.stderr.read().decode(errors='replace').strip().splitlines()[-1:]}")
    out["days"] = [d.isoformat() for d in days]
    out["recent_days"] = [d.isoformat() for d in recent]
    out["month_ends"] = [d.isoformat() for d in ctx["month_ends"]]
    out["faults"] = ctx["faults"]
    return out


def step_report(ctx) -> dict:
    from gridhead.storage import sql
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


def step_bill(ctx) -> dict:
    """Bill the last complete month: ``billing_core.jobs.bills.run`` then its summary, money in fen."""
    from gridhead.billing_core.jobs import bills
    bills.run(ctx["data"], ctx["period"])
    return bills.summary(ctx["data"], ctx["period"])


def step_lineloss(ctx, worst: int = 3, top: int = 3) -> dict:
    """Line loss (线损) of the same month per area and feeder, stored in the lake (``line_loss``), and the
    audit list (稽查) ranked from the same result and stored (``audit``): counts and the first items.

    The demo collects only the month's first and last freezes, so each area's and feeder's month is one
    difference: it is spread over the month's days (flag ``spread``, billing_core.lineloss) rather than
    leaving every day 不可算 — the stored days add up to the month, which is what the summary prints and
    what :func:`lineloss_query` (the query the demo suggests) sums back."""
    from gridhead.storage import archive, sql
    from gridhead.billing_core.jobs import audit, lineloss
    data, month = ctx["data"], ctx["period"]
    first, last = lineloss.month_range(month)
    root = sql.lake_root(data)
    with archive.Archive(sql.archive_path(data), read_only=True) as a:
        res = lineloss.compute(a, root, first, last, max_gap=(last - first).days + 1)
        items = audit.rank_month(a, root, month, res=res)
    lineloss.write_days(root, res)
    audit.save(root, month, items)
    rows = lineloss.month_table(res).to_pylist()
    areas = [r for r in rows if r["level"] == "area"]
    counts: dict = {}
    for r in areas:
        counts[r["category"]] = counts.get(r["category"], 0) + 1
    rated = sorted((r for r in areas if r["rate_bp"] is not None), key=lambda r: -r["rate_bp"])
    feeders = [r for r in rows if r["level"] == "feeder"]
    return {"month": month, "areas": len(areas), "feeders": len(feeders), "categories": counts,
            "worst": [{"area": r["unit_id"], "rate_pct": round(r["rate_bp"] / 100, 2), "category": r["category"]}
                      for r in rated[:worst]],
            "feeder_rates": [{"feeder": r["unit_id"], "category": r["category"],
                              "rate_pct": None if r["rate_bp"] is None else round(r["rate_bp"] / 100, 2)}
                             for r in feeders],
            "query": lineloss_query(first, last),
            "audit_items": items.num_rows,
            "audit_top": [{k: r[k] for k in ("item_id", "score", "kinds", "evidence")}
                          for r in items.slice(0, top).to_pylist()]}


def lineloss_query(first: _dt.date, last: _dt.date) -> str:
    """The month's line loss per area and feeder from the stored days (SQL view ``line_loss``): the
    figures the demo's summary prints (the rate rounded half away from zero, as billing_core.lineloss)."""
    return ("SELECT level, unit_id, sum(supply_kwh_x100) / 100 AS supply_kwh, sum(sales_kwh_x100) / 100 AS sales_kwh, "
            "round(100.0 * sum(loss_kwh_x100) / sum(supply_kwh_x100), 2) AS rate_pct, count(*) AS days "
            f"FROM line_loss WHERE date BETWEEN '{first}' AND '{last}' GROUP BY level, unit_id ORDER BY level, unit_id")


class LiveHeadEnd:
    """The head-end with its control API mounted as ``gridhead serve`` mounts it (:func:`headend.control.mount`),
    on 127.0.0.1 in an event loop of its own thread, so synchronous code (the prepayment loop, which calls
    the API over HTTP) can run beside it: ``with LiveHeadEnd(data) as he: he.port, he.api``."""

    def __init__(self, data, start_timeout_s: float = 30.0) -> None:
        self.data, self.start_timeout_s = pathlib.Path(data), start_timeout_s
        self.port = self.api = self.error = self._loop = self._stop = self._he = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name="demo-headend", daemon=True)

    async def _serve(self) -> None:
        from gridhead.headend import control
        from gridhead.headend.config import Config
        from gridhead.headend.server import HeadEnd
        try:
            he = HeadEnd(Config(data_dir=str(self.data), listen_host="127.0.0.1", listen_port=0))
            await he.start()
        except BaseException as exc:     # noqa: BLE001 - reported to the caller's thread
            self.error = exc
            self._ready.set()
            return
        ctl = None
        try:
            ctl = control.mount(he, control.ControlConfig(port=0, data_dir=str(self.data)))
            self._he, self.port, self.api = he, he.port, ctl.url
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            self._ready.set()
            await self._stop.wait()
        except BaseException as exc:     # noqa: BLE001
            self.error = exc
            self._ready.set()
        finally:
            if ctl is not None:
                ctl.task.cancel()
                await asyncio.gather(ctl.task, return_exceptions=True)
            await he.stop()

    def online(self) -> int:
        return len(self._he.sessions) if self._he is not None else 0

    def __enter__(self) -> "LiveHeadEnd":
        self._thread.start()
        if not self._ready.wait(self.start_timeout_s) or self.error is not None:
            self.__exit__()
            raise DemoError(f"the head-end with its control API did not start: {self.error or 'timed out'}")
        return self

    def __exit__(self, *exc) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def step_prepay(ctx) -> dict:
    """The prepayment loop (预付费) end to end on the demo fleet, through the head-end's control
    path: the month's bills are posted to the ledger; every prepayment customer but one pays ahead; the
    daily runs (``billing_core.jobs.prepay.run``) over the collected days take that one below zero past the grace
    period, and its trip goes to the running head-end's control API (``headend.prepay_control``) with the
    system as the audited operator — the simulated meter's relay opens, read back; the customer pays
    (``billing_core.jobs.ledger.add_entry``) and ``billing_core.jobs.prepay.after_payment`` reconnects it — relay closed, read
    back.  Every command is in the audit log (``audit_log``) and every step in ``prepay_events``."""
    from gridhead.storage import sql
    from gridhead.billing_core.jobs import bills, ledger, prepay
    from gridhead.storage import control_log as CL
    from gridhead.headend.prepay_control import sender
    data = ctx["data"]
    posted = ledger.post_bills(data, ctx["period"], who="demo")
    pre = [r for r in ledger.balances(data).to_pylist() if r["prepaid"]]
    if not pre:                          # a fleet of a few meters may have none: say so, do not fail
        return {"skipped": "no prepayment customer in this fleet (try more meters)", "posted": posted["posted"]}
    who = pre[0]
    # the others pay what they owe and 100 yuan ahead, in one bank file (`gridhead pay import`)
    bank = data / "bank-payments.csv"
    bank.write_text("ref,customer_no,amount_yuan,paid_on\n" + "".join(
        f"demo-{r['customer_no']},{r['customer_no']},{bills.yuan(max(r['balance_fen'], 0) + 10_000)},{today_local()}\n"
        for r in pre[1:]))
    if len(pre) > 1:
        ledger.import_payments(data, bank, by="demo-bank")
    _tid, token = CL.TokenStore(CL.tokens_path(data)).add(prepay.SYSTEM, "operator")
    out = {"customer": who["customer_no"], "customer_id": who["customer_id"], "posted": posted["posted"],
           "paid_ahead": len(pre) - 1, "runs": []}
    with LiveHeadEnd(data) as he:
        fleet = start_fleet(data, he.port, seed=ctx["seed"], faults={}, heartbeat_s=ctx["heartbeat_s"])
        try:
            want = ctx["terminals"]
            deadline = time.monotonic() + ctx["wait_s"]
            while he.online() < want and time.monotonic() < deadline:
                time.sleep(0.05)
            out["online"] = he.online()
            send = sender(he.api, token)
            # the collected days, never a future one (its prepay run would be taken as done); the grace
            # period needs two days, so one collected day is run after the day before it (no charge)
            recent = ctx["recent_days"]
            for day in recent if len(recent) > 1 else [recent[0] - _dt.timedelta(days=1)] + recent:
                r = prepay.run(data, day, send=send)
                out["runs"].append({k: r[k] for k in ("day", "charged_fen", "reminders", "trips", "dispatched")})
                if _state(data, who["customer_id"])["tripped"]:
                    break
            st = _state(data, who["customer_id"])
            out["trip"] = _answer(data, who["customer_id"], "disconnect")
            owed = -st["credit_fen"]
            pay = ledger.add_entry(data, who["customer_no"], "payment", max(owed, 0) + 5_000, "demo-cashier")
            out["paid_fen"] = pay["amount_fen"]
            out["after_payment"] = prepay.after_payment(data, [who["customer_id"]], send=send)
            out["reconnect"] = _answer(data, who["customer_id"], "reconnect")
            out["tripped_now"] = _state(data, who["customer_id"])["tripped"]
            out["api"] = he.api
        finally:
            stop_process(fleet)
    meter = out["trip"]["target"] if out["trip"] else None
    with sql.Session(data) as s:
        audit = s.query("SELECT seq, who, command, target, outcome, reason, readback FROM audit_log "
                        f"WHERE target IN ('{meter}', 'meter:{meter}') ORDER BY seq").to_pylist()
    with ledger.Reader(data) as r:
        events = [e for e in r.columns("SELECT event FROM prepay_events WHERE customer_id = $c ORDER BY ts_utc",
                                       {"c": who["customer_id"]})["event"].tolist()]
    out.update(meter=meter, audit=audit, events=events)
    return out


def _state(data, customer_id) -> dict:
    from gridhead.billing_core.jobs import prepay
    rows = [r for r in prepay.status(data)["customers"].to_pylist() if r["customer_id"] == customer_id]
    return rows[0] if rows else {"tripped": False, "credit_fen": 0}


def _answer(data, customer_id, action) -> dict | None:
    """The control API's answer to the customer's last ``action`` command (recorded by the prepayment
    loop): outcome, the meter, and the relay state read back from the meter after the command."""
    from gridhead.billing_core.jobs import ledger
    with ledger.Reader(data) as r:
        rows = r.columns("SELECT e.detail, c.meter_id FROM prepay_events e JOIN prepay_commands c USING (command_id) "
                         "WHERE e.customer_id = $c AND c.action = $a AND e.event LIKE 'command_%' ORDER BY e.ts_utc",
                         {"c": customer_id, "a": action})
    if not len(rows["detail"]):
        return None
    ans = json.loads(rows["detail"][-1])
    back = ans.get("readback") or {}
    return {"outcome": ans.get("outcome"), "target": str(rows["meter_id"][-1]), "who": ans.get("who"),
            "relay_open": back.get("relay_open"), "confirmed": ans.get("confirmed")}


def step_next(ctx) -> dict:
    """Commands to run next on what the demo left (the human summary ends with them)."""
    d, s = ctx["data"], ctx["summary"]
    out = [s["report"]["next"]]
    period = s.get("bill", {}).get("period")
    if period:
        out += [f"gridhead sql --data {d} \"SELECT status, count(*) AS bills, sum(total_fen) / 100 AS yuan "
                f"FROM bills WHERE period = '{period}' GROUP BY status\""]
    if period:
        first = s.get("prepay", {}).get("customer") or "CUSTOMER"
        out += [f"gridhead bill show {first} --period {period} --data {d}"]
    if "lineloss" in s:
        out += [f"gridhead sql --data {d} \"{s['lineloss']['query']}\"",
                f"gridhead report lineloss --period {s['lineloss']['month']} --html lineloss.html --data {d}",
                f"gridhead audit --period {s['lineloss']['month']} --data {d}"]
    if "prepay" in s:
        out += [f"gridhead sql --data {d} \"SELECT seq, who, command, target, outcome, reason FROM audit_log\"",
                f"gridhead prepay status --data {d}"]
    return {"commands": out}


STEPS: list[Step] = [
    Step("archive", step_archive, "generate and import the archive"),
    Step("collect", step_collect, "head-end + simulated fleet: collect, back-fill"),
    Step("report", step_report, "what is in the lake"),
    Step("bill", step_bill, "bill the last complete month"),
    Step("lineloss", step_lineloss, "line loss and the audit list of that month"),
    Step("prepay", step_prepay, "prepayment: run out, trip, pay, reconnect through the control API"),
    Step("next", step_next, "what to run next"),
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
    """The human summary of a demo run: a line or two per step, then the commands to run next."""
    from gridhead.billing_core.jobs.bills import yuan
    a, c, r = summary["archive"], summary["collect"], summary["report"]
    b, af = c["before"], c.get("after", c["before"])
    lines = [
        f"archive    {a['terminals']} concentrators, {a['meters']} meters, start {a['start']} -> {a['archive']}",
        f"fleet      {c['online_at_start']}/{c['terminals']} terminals online at collection start; "
        f"faults {', '.join(f'{k}={v}' for k, v in c['faults'].items()) or 'none'}",
        f"collected  days {', '.join(c['days'])}: {c['requests']} requests "
        f"({c['failed_requests']} failed), {c['readings_stored']} readings stored "
        f"({c['readings_backfilled']} by back-fill) in {c['seconds']} s",
        f"success    {b['success_first_pct']}% after the first pass ({b['first_pass']}/{b['expected']} meter-days), "
        f"{af['success_pct']}% after back-fill ({af['collected']}/{af['expected']}; {af['missing']} still missing)",
        f"lake       {r['lake']} ({r['readings_in_lake']} readings)",
    ]
    if "bill" in summary:
        x = summary["bill"]
        held = ", ".join(f"{k} {v}" for k, v in x["held_by_reason"].items())
        lines += [f"bills      {x['period']}: {x['bills']} bills, {x['issued']} issued, {x['held']} held"
                  f"{f' ({held})' if held else ''}; total {yuan(x['total_fen'])} yuan, issued "
                  f"{yuan(x['issued_fen'])} yuan, {yuan(x['energy_kwh_x100'])} kWh"]
    if "lineloss" in summary:
        x = summary["lineloss"]
        worst = ", ".join(f"area {w['area']} {w['rate_pct']:.2f}% ({w['category']})" for w in x["worst"])
        feeders = ", ".join(f"feeder {f['feeder']} " + ("-" if f["rate_pct"] is None else f"{f['rate_pct']:.2f}%")
                            + f" ({f['category']})" for f in x.get("feeder_rates", []))
        lines += [f"line loss  {x['month']}: {x['areas']} areas — "
                  f"{', '.join(f'{k} {v}' for k, v in sorted(x['categories'].items()))}; worst {worst or 'none'}"
                  + (f"; {feeders}" if feeders else ""),
                  "           (the month's first and last freezes: each day's row is the month spread evenly)",
                  f"audit      {x['audit_items']} items on the list"
                  + "".join(f"\n             #{k} {t['item_id']} score {t['score']} {t['kinds']}: {t['evidence']}"
                            for k, t in enumerate(x["audit_top"], 1))]
    if "skipped" in summary.get("prepay", {}):
        lines += [f"prepay     skipped: {summary['prepay']['skipped']}"]
    elif "prepay" in summary:
        x = summary["prepay"]
        relay = {True: "open", False: "closed", None: "unknown"}
        trip, back = x["trip"] or {}, x["reconnect"] or {}
        lines += [f"prepay     customer {x['customer']} (meter {x['meter']}) runs out: daily runs "
                  + ", ".join(f"{d['day']}{' trip' if d['trips'] else ''}" for d in x["runs"])
                  + f"; trip {trip.get('outcome')} by {trip.get('who')}, relay read back {relay[trip.get('relay_open')]}",
                  f"           pays {yuan(x['paid_fen'])} yuan; reconnect {back.get('outcome')}, relay read back "
                  f"{relay[back.get('relay_open')]}; audit log: "
                  + ", ".join(f"#{e['seq']} {e['command']} {e['outcome']}" for e in x["audit"])]
    lines += [f"next       {cmd}" if k == 0 else f"           {cmd}" for k, cmd in enumerate(summary.get("next", {}).get(
        "commands", [r["next"]]))]
    extra = [k for k in summary if k not in ("archive", "collect", "report", "bill", "lineloss", "prepay", "next")]
    lines += [f"{k:<10} {json.dumps(summary[k], default=str)}" for k in extra]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "fleet":
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        _fleet_main(sys.argv[2:])
    else:
        sys.exit("usage: python -m gridhead.headend.sim.demo fleet DATA HOST PORT SEED HEARTBEAT_S FAULTS")
