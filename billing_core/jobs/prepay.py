"""Prepayment (预付费) on disk: the daily deduction, reminders and the automatic trip / reconnect loop.

``run(data, day)`` — ``gridhead prepay run --date D`` — for every prepayment customer (``customers.prepaid``):

1. the day's energy from the daily frozen readings (日冻结) at 00:00 of D and D+1 of the meter at the
   customer's metering point on D, times its multiplier; priced by the bill kernel
   (:func:`billing_core.prepay.daily_charge`; annual tiers on the year's energy before D, the rule of
   :func:`_year_to_date`) and deducted as a ledger entry ``prepay_charge`` (key
   ``prepay:<customer_id>:<D>``; the monthly bill trues the month's deductions up, ``billing_core.jobs.ledger``);
2. the thresholds (:class:`billing_core.prepay.PrepayThresholds`): a reminder (催费) below the warning level,
   a trip (跳闸) when the credit has stayed below zero for the grace period, never for a protected
   (保电) meter; a reconnect (合闸) of a tripped customer whose credit is back at the threshold;
3. commands for the head-end's control path, written to an outbox (``prepay_commands``) in the same
   transaction as the deductions, the events and the run's row — all or nothing; then
4. :func:`dispatch` sends the outbox's pending commands through a ``send`` callable (the control API
   client, ``headend.prepay_control``) with the system as the operator and reason "prepayment balance
   exhausted", and records each outcome (a chunk of outcomes per transaction).  A command whose outcome
   was lost (a crash after sending) or that did not reach the head-end at all is sent again by the next
   dispatch with the same ``client_id``: the control API answers a repeated id with the first outcome
   and never acts twice; after ``PrepayThresholds.send_attempts`` failures to reach it, an alarm.  A customer
   is tripped (:func:`status`) only once the head-end confirmed the relay open.

A date is run once: re-running it deducts nothing again and decides nothing again (the ``prepay_runs``
row says it was done) — it only sends what is still pending.  Tables, in ``archive.duckdb`` beside the
ledger: ``prepay_runs`` (one row per day), ``prepay_state`` (per customer: below zero since, reminded,
tripped — rewritten by each run), ``prepay_commands`` (outbox, append-only) and ``prepay_events``
(append-only: every reminder, trip, withheld trip, reconnect and command outcome, with who and when).

:func:`after_payment` is what a payment calls: a tripped customer whose credit is back gets its
reconnect at once, not at the next daily run.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import os
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gridhead.billing_core import ledger as L
from gridhead.billing_core import prepay as prepay_rules
from gridhead.billing_core.run import voltage_level
from gridhead.billing_core.tariff import TariffSet
from gridhead.protocols.errors import StorageError
from gridhead.storage import schema
from gridhead.storage.duck import arrow_table
from gridhead.storage.paths import Data, data_dir, lake_root
from gridhead.storage.results import LEDGER_TABLE

from . import bills as _bills
from . import ledger as _ledger

SYSTEM = "system:prepay"
REASON = "prepayment balance exhausted"
DDL = """
CREATE TABLE IF NOT EXISTS prepay_runs (day DATE NOT NULL, ts_utc TIMESTAMPTZ NOT NULL, who VARCHAR NOT NULL,
    customers BIGINT, read BIGINT, charged_fen BIGINT, reminders BIGINT, trips BIGINT, withheld BIGINT,
    closes BIGINT, batch VARCHAR);
CREATE TABLE IF NOT EXISTS prepay_state (customer_id BIGINT NOT NULL, below_since INTEGER NOT NULL,
    warned BOOLEAN NOT NULL, tripped BOOLEAN NOT NULL);
CREATE TABLE IF NOT EXISTS prepay_commands (command_id VARCHAR NOT NULL, customer_id BIGINT NOT NULL,
    meter_id BIGINT, action VARCHAR NOT NULL, reason VARCHAR, day DATE, ts_utc TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS prepay_events (ts_utc TIMESTAMPTZ NOT NULL, day DATE, customer_id BIGINT NOT NULL,
    event VARCHAR NOT NULL, credit_fen BIGINT, who VARCHAR NOT NULL, command_id VARCHAR, detail VARCHAR);
"""
FINAL = ("ok", "refused", "failed", "expired", "abandoned")
Command = dict[str, Any]            # an outbox command as the head-end's send() gets it, or a pending row
# send(command) -> the head-end's answer ({"outcome": ..., ...}; None or {} counts as failed)
Send = Callable[[Command], Mapping[str, Any] | None]
Columns = dict[str, np.ndarray]


def _value(w: _ledger.Writer, sql: str) -> Any:
    """The value of a statement that gives one row of one column (an aggregate)."""
    row = w.con.execute(sql).fetchone()
    assert row is not None
    return row[0]


def _open(data: Data) -> _ledger.Writer:
    w = _ledger.Writer(data)
    w.con.execute(DDL)
    return w


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _customers(w: _ledger.Writer, day: dt.date) -> Columns:
    """Prepayment customers with the meter at their point on ``day`` (meter_id −1: none)."""
    return w.columns("""
        SELECT c.customer_id, c.category, c.voltage_v, coalesce(pm.meter_id, -1) AS meter_id,
               dense_rank() OVER (ORDER BY c.category, c.voltage_v) - 1 AS pair,
               coalesce(mu.ct_ratio, 1) AS ct, coalesce(mu.pt_ratio, 1) AS pt, coalesce(m.register_digits, 6) AS digits
        FROM customers c
        LEFT JOIN (SELECT customer_id, min(point_id) AS point_id FROM points WHERE role = 'customer'
                   GROUP BY customer_id) p USING (customer_id)
        LEFT JOIN point_meters pm ON pm.point_id = p.point_id AND pm.valid_from <= $d
             AND (pm.valid_to IS NULL OR pm.valid_to > $d)
        LEFT JOIN point_multipliers mu ON mu.point_id = p.point_id AND mu.valid_from <= $d
             AND (mu.valid_to IS NULL OR mu.valid_to > $d)
        LEFT JOIN meters m ON m.meter_id = pm.meter_id
        WHERE c.prepaid ORDER BY c.customer_id""", {"d": day})


def _readings(w: _ledger.Writer, data: Data, meters: np.ndarray, day: dt.date, also: Iterable[dt.date] = ()
              ) -> list[Columns]:
    """Daily frozen readings of ``meters`` (−1 = none) at 00:00 of ``day``, of the next day and of each
    of ``also`` (one scan of the lake), one dict of registers per date in that order."""
    days = [day, day + dt.timedelta(days=1), *also]
    files = _bills.settlement_files(lake_root(data), schema.DAILY, sorted(set(days)))
    regs = ", ".join(f"coalesce({r}, -1)::BIGINT AS {r}" for r in prepay_rules.REGISTERS)
    got = w.columns(f"SELECT meter_id, date, {regs} FROM ({_bills.pivot_files(*files).replace('@FILTER@', '')}) "
                    f"WHERE date IN (SELECT unnest($d::DATE[]))", {"d": sorted(set(days))})
    dates = got["date"].astype("datetime64[D]")
    out: list[Columns] = []
    for d in days:
        sel = dates == np.datetime64(d)
        out.append({r: _ledger.lookup(got["meter_id"][sel].astype(np.int64), got[r][sel].astype(np.int64), meters, -1)
                    for r in prepay_rules.REGISTERS})
    return out


def _year_start(w: _ledger.Writer, data: Data, cid: np.ndarray, day: dt.date) -> tuple[np.ndarray, np.ndarray]:
    """Where each customer's year before ``day`` stands by the bills, for annual tiers (年阶梯): the
    ``cum_after_kwh_x100`` of its latest bill of the year before this month (0 if none) and the day that
    bill's period ends (else the 1st of this month), from which the readings count (:func:`_year_to_date`)."""
    first = np.datetime64(day.replace(day=1), "D").astype(np.int64)
    cum = np.zeros(len(cid), np.int64)
    start = np.full(len(cid), first, np.int64)
    # no bill yet this year: the opening year-to-date imported at go-live (archive customers.opening_ytd_*)
    # counts from its date, as the bill run's year-to-date does (billing_core.run.year_to_date_from_readings)
    has_opening = _value(w, "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'customers' "
                            "AND column_name = 'opening_ytd_date'") > 0   # an older archive: none
    if len(cid) and has_opening:
        op = w.columns("""SELECT customer_id, opening_ytd_kwh_x100 AS cum, opening_ytd_date AS d FROM customers
                          WHERE opening_ytd_date IS NOT NULL AND year(opening_ytd_date) = $y AND opening_ytd_date <= $d""",
                       {"y": day.year, "d": day})
        ids = op["customer_id"].astype(np.int64)
        cum = _ledger.lookup(ids, op["cum"].astype(np.int64), cid, 0)
        start = _ledger.lookup(ids, np.asarray(op["d"], "datetime64[D]").astype(np.int64), cid, first)
    files = [f for f in _bills.earlier_bills(data, f"{day:%Y-%m}") if f"period={day.year:04d}-" in f]
    if files and len(cid):
        lst = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        got = w.columns(f"""SELECT customer_id, arg_max(cum_after_kwh_x100, period) AS cum, max(period) AS period
                            FROM read_parquet([{lst}]) GROUP BY customer_id""")
        ids = got["customer_id"].astype(np.int64)
        ends = (np.array([f"{p}-01" for p in got["period"]], "datetime64[M]") + 1).astype("datetime64[D]")
        has = np.isin(cid, ids)
        cum = np.where(has, _ledger.lookup(ids, got["cum"].astype(np.int64), cid, 0), cum)
        start = np.where(has, _ledger.lookup(ids, ends.astype(np.int64), cid, first), start)
    return cum, start.astype("datetime64[D]")


def _year_to_date(c: Columns, cum: np.ndarray, start: np.ndarray, at: Mapping[dt.date, Columns],
                  now_reading: Columns) -> np.ndarray:
    """Energy of the year before the day, per customer (0.01 kWh): what annual tiers count.

    The rule the monthly bill follows (billing_core.jobs.bills: ``cum_prev`` is the previous bill's ``cum_after``):
    :func:`_year_start`'s ``cum`` plus the metered energy from 00:00 of ``start`` to 00:00 of the day —
    the difference of the two daily frozen readings (``at[start date]`` and ``now_reading``) times the
    multiplier.  A reading missing at either end counts that part as 0 (the month's bill trues it up)."""
    meters = c["meter_id"].astype(np.int64)
    since = np.zeros(len(meters), np.int64)
    for d, first in at.items():
        sel = start == np.datetime64(d)
        e, ok = prepay_rules.daily_energy({r: v[sel] for r, v in first.items()}, {r: v[sel] for r, v in now_reading.items()},
                               c["ct"][sel], c["pt"][sel], c["digits"][sel])
        since[sel] = np.where(ok & (meters[sel] >= 0), e["e_total"], 0)
    return cum + since


def _protected(data: Data) -> set[str]:
    """Meters under protection (保电) by the head-end's audit log: the last ok protect command of each."""
    try:
        from gridhead.storage import control_log as CL
    except ImportError:                       # no control log in this build
        return set()
    state: dict[str, bool] = {}
    for rec in CL.read_records(CL.audit_path(data_dir(data))):
        if rec.get("command") == "protect" and rec.get("outcome") == "ok":
            params = rec.get("params")
            if isinstance(params, str):
                try:
                    params = json.loads(params)
                except ValueError:
                    params = {}
            state[str(rec.get("target"))] = bool((params or {}).get("on"))
    return {t for t, on in state.items() if on}


def run(data: Data, day: dt.date, thresholds: prepay_rules.PrepayThresholds | None = None,
        tariffs_dir: str | os.PathLike[str] | None = None, send: Send | None = None,
        who: str = SYSTEM, kernel: ModuleType | None = None) -> dict[str, Any]:
    """Deduct, remind and decide for ``day``; then dispatch pending commands with ``send`` (if given).

    Returns the day's summary (customers, read, charged_fen, reminders, trips, withheld, closes,
    repeated: True when the day had been run before) and ``dispatched`` (outcome counts).
    """
    t = thresholds or prepay_rules.PrepayThresholds()
    tariffs = TariffSet.load(tariffs_dir)
    protected = _protected(data)
    with _open(data) as w:
        done = w.con.execute("SELECT customers, read, charged_fen, reminders, trips, withheld, closes FROM prepay_runs "
                             "WHERE day = $d", {"d": day}).fetchone()
        if done:
            keys = ("customers", "read", "charged_fen", "reminders", "trips", "withheld", "closes")
            summary = {"day": str(day), **dict(zip(keys, map(int, done))), "repeated": True}
        else:
            summary = _run_day(w, data, day, t, tariffs, protected, who, kernel)
    summary["dispatched"] = dispatch(data, send, t) if send else {}
    return summary


def _run_day(w: _ledger.Writer, data: Data, day: dt.date, t: prepay_rules.PrepayThresholds, tariffs: TariffSet,
             protected: set[str], who: str, kernel: ModuleType | None) -> dict[str, Any]:
    c = _customers(w, day)
    n = len(c["customer_id"])
    cid = c["customer_id"].astype(np.int64)
    meters = c["meter_id"].astype(np.int64)
    try:                                                # nothing is written yet: a bad file is one line
        cum, start = _year_start(w, data, cid, day)      # annual tiers (年阶梯): the year before the day
        starts = sorted({d for d in start.astype(dt.date) if d < day})
        prev, now, *firsts = _readings(w, data, meters, day, starts)
    except duckdb.Error as exc:
        raise StorageError(f"prepay {day}: reading {data_dir(data)}: {str(exc).splitlines()[0]}") from None
    e, ok = prepay_rules.daily_energy(prev, now, c["ct"], c["pt"], c["digits"])
    ok &= meters >= 0
    # tariff rows looked up once per distinct (category, voltage), not per customer
    pairs = w.columns("SELECT DISTINCT category, voltage_v FROM customers WHERE prepaid ORDER BY 1, 2")
    look = np.array([tariffs.rows([str(cat)], [voltage_level(int(v))], day)[0]
                     for cat, v in zip(pairs["category"], pairs["voltage_v"])], np.int32)
    rows = look[c["pair"].astype(np.int64)] if n else np.zeros(0, np.int32)     # pair: the same order, in SQL
    ytd = _year_to_date(c, cum, start, dict(zip(starts, firsts)), prev)
    charge = prepay_rules.daily_charge(tariffs, rows, e, calendar.monthrange(day.year, day.month)[1], cum_prev=ytd,
                            kernel=kernel)
    charge = np.where(ok, charge, 0)
    # a day of a period whose bill is already posted is billed: no estimate on top of it
    billed = w.columns(f"SELECT DISTINCT customer_id FROM {LEDGER_TABLE} WHERE kind = 'bill' AND period = $p",
                       {"p": f"{day:%Y-%m}"})["customer_id"]
    charge = np.where(np.isin(cid, billed.astype(np.int64)), 0, charge)
    batch = _ledger.batch_id("prepay")
    ts = _now()
    w.con.execute("BEGIN")
    try:
        pay = charge > 0
        m = int(pay.sum())
        w.append({"customer_id": cid[pay], "kind": "prepay_charge", "debit_fen": charge[pay],
                  "credit_fen": np.zeros(m, np.int64), "period": f"{day.year:04d}-{day.month:02d}", "value_date": day,
                  "key": pc.binary_join_element_wise("prepay:", pc.cast(pa.array(cid[pay]), pa.string()), f":{day}", ""),
                  "note": "daily estimated charge"}, who, batch, ts)
        credit = -w.balances_of(cid)
        st = _state(w, cid)
        prot = np.array([str(x) in protected for x in meters], bool) if protected else np.zeros(n, bool)
        dec = prepay_rules.decide(credit, st["below_since"], st["warned"], st["tripped"], prot, L.days_of(day), t)
        tripped = (st["tripped"] | dec["trip"]) & ~dec["close"]
        _write_state(w, cid, dec["below_since"], dec["warned"], tripped)
        ev = _events(w, day, ts, who, cid, meters, credit, dec, t)
        w.con.execute("INSERT INTO prepay_runs VALUES ($d, $ts, $who, $n, $r, $c, $rem, $tr, $wh, $cl, $b)",
                      {"d": day, "ts": ts, "who": who, "n": n, "r": int(ok.sum()), "c": int(charge.sum()),
                       "rem": ev["reminders"], "tr": ev["trips"], "wh": ev["withheld"], "cl": ev["closes"], "b": batch})
        w.con.execute("COMMIT")
    except BaseException:
        w.con.execute("ROLLBACK")
        raise
    return {"day": str(day), "customers": n, "read": int(ok.sum()), "charged_fen": int(charge.sum()), **ev,
            "repeated": False}


def _state(w: _ledger.Writer, cid: np.ndarray) -> Columns:
    s = w.columns("SELECT customer_id, below_since, warned, tripped FROM prepay_state")
    return {"below_since": _ledger.lookup(s["customer_id"], s["below_since"].astype(np.int64), cid, prepay_rules.NO_DAY),
            "warned": _ledger.lookup(s["customer_id"], s["warned"].astype(np.int64), cid, 0).astype(bool),
            "tripped": _ledger.lookup(s["customer_id"], s["tripped"].astype(np.int64), cid, 0).astype(bool)}


def _write_state(w: _ledger.Writer, cid: np.ndarray, below_since: np.ndarray, warned: np.ndarray,
                 tripped: np.ndarray) -> None:
    """Replace the state rows of these customers (inside the caller's transaction)."""
    w.con.register("_st", pa.table({"customer_id": pa.array(cid), "below_since": pa.array(below_since.astype(np.int32)),
                                    "warned": pa.array(warned), "tripped": pa.array(tripped)}))
    try:
        w.con.execute("DELETE FROM prepay_state WHERE customer_id IN (SELECT customer_id FROM _st)")
        w.con.execute("INSERT INTO prepay_state SELECT * FROM _st")
    finally:
        w.con.unregister("_st")


def _events(w: _ledger.Writer, day: dt.date, ts: dt.datetime, who: str, cid: np.ndarray, meters: np.ndarray,
            credit: np.ndarray, dec: Mapping[str, np.ndarray], t: prepay_rules.PrepayThresholds) -> dict[str, int]:
    """Events and outbox commands of the decisions (the caller holds the transaction)."""
    ev: list[pa.Table] = []
    cmd: list[pa.Table] = []
    for name, mask, action in (("reminder", dec["remind"], None), ("trip", dec["trip"], "disconnect"),
                               ("trip_withheld_protected", dec["trip_protected"], None),
                               ("reconnect", dec["close"], "reconnect")):
        idx = np.flatnonzero(mask)
        if not len(idx):
            continue
        ids = [f"prepay-{day}-{action}-{int(cid[i])}" if action else None for i in idx]
        detail = (f"credit below the warning level {t.warn_fen} fen" if name == "reminder" else
                  f"below zero for {t.grace_days} day(s) or more" if action == "disconnect" else
                  "meter protected (保电): no trip" if not action else f"credit at or above {t.reconnect_fen} fen")
        ev.append(pa.table({"ts_utc": pa.array([ts] * len(idx), pa.timestamp("us", "UTC")),
                            "day": pa.array([day] * len(idx), pa.date32()), "customer_id": pa.array(cid[idx]),
                            "event": pa.array([name] * len(idx)), "credit_fen": pa.array(credit[idx]),
                            "who": pa.array([who] * len(idx)), "command_id": pa.array(ids, pa.string()),
                            "detail": pa.array([detail] * len(idx))}))
        if action:
            cmd.append(pa.table({"command_id": pa.array(ids), "customer_id": pa.array(cid[idx]),
                                 "meter_id": pa.array(meters[idx]), "action": pa.array([action] * len(idx)),
                                 "reason": pa.array([REASON if action == "disconnect" else "prepayment balance restored"]
                                                    * len(idx)),
                                 "day": pa.array([day] * len(idx), pa.date32()),
                                 "ts_utc": pa.array([ts] * len(idx), pa.timestamp("us", "UTC"))}))
    for name, tables in (("prepay_events", ev), ("prepay_commands", cmd)):
        if tables:
            w.con.register("_rows", pa.concat_tables(tables))
            try:
                w.con.execute(f"INSERT INTO {name} SELECT * FROM _rows")
            finally:
                w.con.unregister("_rows")
    return {"reminders": int(dec["remind"].sum()), "trips": int(dec["trip"].sum()),
            "withheld": int(dec["trip_protected"].sum()), "closes": int(dec["close"].sum())}


def after_payment(data: Data, customer_ids: Iterable[int], thresholds: prepay_rules.PrepayThresholds | None = None,
                  send: Send | None = None, who: str = SYSTEM) -> dict[str, Any]:
    """Reconnect at once the tripped customers among ``customer_ids`` whose credit is back (a payment's
    follow-up); returns ``{closes, dispatched}``."""
    t = thresholds or prepay_rules.PrepayThresholds()
    cid = np.unique(np.asarray(customer_ids, np.int64))
    with _open(data) as w:
        w.con.execute("BEGIN")
        try:
            st = _state(w, cid)
            credit = -w.balances_of(cid)
            close = st["tripped"] & (credit >= t.reconnect_fen)
            n = 0
            if close.any():
                idx = np.flatnonzero(close)
                meters = w.columns("""SELECT c.customer_id, coalesce(min(pm.meter_id), -1) AS meter_id FROM customers c
                    LEFT JOIN points p ON p.customer_id = c.customer_id AND p.role = 'customer'
                    LEFT JOIN point_meters pm ON pm.point_id = p.point_id AND pm.valid_to IS NULL GROUP BY 1""")
                m = _ledger.lookup(meters["customer_id"], meters["meter_id"], cid, -1)
                today = dt.date.today()
                dec = {k: np.zeros(len(cid), bool) for k in ("remind", "trip", "trip_protected")}
                dec["close"] = close
                w.con.execute("UPDATE prepay_state SET tripped = false WHERE customer_id IN "
                              f"({', '.join(str(int(x)) for x in cid[idx])})")
                n = _events(w, today, _now(), who, cid, m, credit, dec, t)["closes"]
            w.con.execute("COMMIT")
        except BaseException:
            w.con.execute("ROLLBACK")
            raise
    return {"closes": n, "dispatched": dispatch(data, send, t) if send else {}}


def pending(data: Data) -> list[Command]:
    """Outbox commands without a final outcome, oldest first (``attempts``: sends that did not reach
    the head-end so far)."""
    with _open(data) as w:
        return _pending(w)


def _pending(w: _ledger.Writer, customers: Iterable[int] | None = None) -> list[Command]:
    only = ""
    if customers is not None:
        only = "AND c.customer_id IN (" + (",".join(str(int(x)) for x in customers) or "NULL") + ")"
    rows: list[Command] = arrow_table(w.con.execute(f"""
        WITH ev AS (SELECT command_id, bool_or(event IN ({', '.join(repr('command_' + f) for f in FINAL)})) AS final,
                           count(*) FILTER (WHERE event = 'command_unreachable') AS attempts
                    FROM prepay_events WHERE command_id IS NOT NULL GROUP BY 1)
        SELECT c.command_id, c.customer_id, cu.customer_no, c.meter_id, c.action, c.reason, c.day,
               coalesce(ev.attempts, 0) AS attempts
        FROM prepay_commands c JOIN customers cu USING (customer_id) LEFT JOIN ev USING (command_id)
        WHERE NOT coalesce(ev.final, false) {only}
        ORDER BY c.ts_utc, c.command_id""")).to_pylist()
    return rows


def _waves(todo: list[Command]) -> list[list[Command]]:
    """The outbox in waves holding at most one command per customer, in order: a customer's trip and
    its later reconnect are never in flight together (they would race at the head-end)."""
    seen: dict[int, int] = {}
    waves: list[list[Command]] = []
    for cmd in todo:
        k = seen.get(cmd["customer_id"], 0)
        seen[cmd["customer_id"]] = k + 1
        if k == len(waves):
            waves.append([])
        waves[k].append(cmd)
    return waves


def dispatch(data: Data, send: Send, thresholds: prepay_rules.PrepayThresholds | None = None, workers: int = 8,
             chunk: int = 1000) -> dict[str, int]:
    """Send every pending command: ``send({command_id, action, target, reason, customer_no}) -> {outcome, ...}``
    (outcome ok / refused / failed / expired / queued); each answer is recorded as an event.

    A ``send`` that raises did not reach the head-end: ``command_unreachable``, the command stays pending
    and is sent again (same ``command_id``, so the head-end never acts twice) by the next dispatch —
    the next run or payment; after ``thresholds.send_attempts`` such failures it is ``command_abandoned``
    with an ``alarm`` event.  A trip the head-end did not carry out (refused, failed, expired, abandoned)
    clears the customer's trip order, so the next run orders it again; a reconnect not carried out sets it
    back, so the next run closes again.  A customer counts as tripped (:func:`status`) only once a trip
    came back ``ok`` — the head-end read the relay open.

    Commands go out ``workers`` at a time (at most one per customer at once, :func:`_waves`); outcomes
    are written ``chunk`` commands per transaction.  Returns counts by outcome."""
    from concurrent.futures import ThreadPoolExecutor

    t = thresholds or prepay_rules.PrepayThresholds()
    counts: dict[str, int] = {}
    with _open(data) as w:
        todo = _pending(w)
    if not todo:
        return counts

    def one(cmd: Command) -> Mapping[str, Any]:
        spec = {"command_id": cmd["command_id"], "action": cmd["action"], "target": str(cmd["meter_id"]),
                "reason": cmd["reason"], "customer_no": cmd["customer_no"]}
        try:
            return send(spec) or {"outcome": "failed", "error": "empty answer"}
        except Exception as exc:            # noqa: BLE001 — not reaching the head-end is an outcome, recorded
            return {"outcome": "unreachable",
                    "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}

    with ThreadPoolExecutor(max(1, workers)) as ex:
        for wave in _waves(todo):
            for i in range(0, len(wave), chunk):
                part = wave[i:i + chunk]
                answers = list(ex.map(one, part))
                _record(data, part, answers, t, counts)
    return counts


def _record(data: Data, part: list[Command], answers: list[Mapping[str, Any]], t: prepay_rules.PrepayThresholds,
            counts: dict[str, int]) -> None:
    """The outcomes of a chunk of commands, in one transaction (events, and the trip state they imply)."""
    ts = _now()
    rows: list[tuple[Command, str, str]] = []
    untrip: list[int] = []
    retrip: list[int] = []
    for cmd, ans in zip(part, answers):
        outcome = str(ans.get("outcome", "failed"))
        if outcome not in FINAL + ("queued", "unreachable"):
            outcome = "failed"
        counts[outcome] = counts.get(outcome, 0) + 1
        rows.append((cmd, f"command_{outcome}", json.dumps(ans, ensure_ascii=False, default=str)[:2000]))
        final_bad = outcome in ("refused", "failed", "expired")
        if outcome == "unreachable" and cmd["attempts"] + 1 >= t.send_attempts:
            final_bad = True
            counts["abandoned"] = counts.get("abandoned", 0) + 1
            why = (f"alarm: {cmd['action']} of customer {cmd['customer_no']} (meter {cmd['meter_id']}) did not "
                   f"reach the head-end in {cmd['attempts'] + 1} attempts; abandoned, the next run decides again")
            rows.append((cmd, "command_abandoned", why))
            rows.append((cmd, "alarm", why))
        if final_bad:
            (untrip if cmd["action"] == "disconnect" else retrip).append(int(cmd["customer_id"]))
    n = len(rows)
    tbl = pa.table({"ts_utc": pa.array([ts] * n, pa.timestamp("us", "UTC")), "day": pa.nulls(n, pa.date32()),
                    "customer_id": pa.array([int(c["customer_id"]) for c, _, _ in rows], pa.int64()),
                    "event": pa.array([e for _, e, _ in rows], pa.string()), "credit_fen": pa.nulls(n, pa.int64()),
                    "who": pa.array([SYSTEM] * n, pa.string()),
                    "command_id": pa.array([c["command_id"] for c, _, _ in rows], pa.string()),
                    "detail": pa.array([d for _, _, d in rows], pa.string())})
    with _open(data) as w:
        w.con.execute("BEGIN")
        try:
            w.con.register("_rows", tbl)
            try:
                w.con.execute("INSERT INTO prepay_events SELECT * FROM _rows")
            finally:
                w.con.unregister("_rows")
            for ids, val in ((untrip, "false"), (retrip, "true")):
                if ids:
                    w.con.execute(f"UPDATE prepay_state SET tripped = {val} WHERE customer_id IN "
                                  f"({', '.join(map(str, ids))})")
            w.con.execute("COMMIT")
        except BaseException:
            w.con.execute("ROLLBACK")
            raise


def status(data: Data, customer: str | None = None) -> dict[str, Any]:
    """Prepayment customers now: credit, below-zero since, reminded, ``tripped`` (the head-end confirmed
    the relay open: the customer's last ``ok`` command was a trip), ``trip_pending`` (a trip ordered and
    not yet confirmed); the pending commands, alarms and the last run.  ``customer``: one 户号."""
    with _open(data) as w:
        only = "AND c.customer_no = $n" if customer is not None else ""
        cust = w.query(f"""
            WITH ok AS (SELECT e.customer_id, arg_max(k.action, e.ts_utc) AS last_ok FROM prepay_events e
                        JOIN prepay_commands k USING (command_id) WHERE e.event = 'command_ok' GROUP BY 1),
                 bal AS (SELECT customer_id, sum(debit_fen) - sum(credit_fen) AS b FROM ledger_entries GROUP BY 1)
            SELECT c.customer_id, c.customer_no, c.name, -coalesce(bal.b, 0)::BIGINT AS credit_fen,
                   CASE WHEN s.below_since >= 0 THEN DATE '1970-01-01' + s.below_since::INTEGER END AS below_zero_since,
                   coalesce(s.warned, false) AS reminded,
                   coalesce(ok.last_ok = 'disconnect', false) AS tripped,
                   coalesce(s.tripped, false) AND NOT coalesce(ok.last_ok = 'disconnect', false) AS trip_pending
            FROM customers c LEFT JOIN bal USING (customer_id) LEFT JOIN prepay_state s USING (customer_id)
            LEFT JOIN ok USING (customer_id)
            WHERE c.prepaid {only} ORDER BY c.customer_id""", {"n": customer} if customer is not None else None)
        if customer is not None and not cust.num_rows:
            raise _ledger.LedgerError(f"--customer {customer!r}: not a prepayment customer (户号) in the archive")
        last = _value(w, "SELECT max(day) FROM prepay_runs")
        pend = _pending(w, cust.column("customer_id").to_pylist() if customer is not None else None)
        alarms = _value(w, "SELECT count(*) FROM prepay_events WHERE event = 'alarm'")
    return {"last_run": str(last) if last else None, "customers": cust, "pending": pend, "alarms": int(alarms)}


def summarise(st: dict[str, Any]) -> dict[str, Any]:
    """The first lines of `gridhead prepay status`: counts and sums over the customers."""
    c = st["customers"]
    credit = np.asarray(c.column("credit_fen").to_numpy(), np.int64) if c.num_rows else np.zeros(0, np.int64)
    col = {k: np.asarray(c.column(k).to_pylist(), bool) for k in ("tripped", "trip_pending", "reminded")}
    return {"customers": c.num_rows, "below_zero": int((credit < 0).sum()), "owed_fen": int(-credit[credit < 0].sum()),
            "credit_fen": int(credit[credit > 0].sum()), "tripped": int(col["tripped"].sum()),
            "trip_pending": int(col["trip_pending"].sum()), "reminded": int(col["reminded"].sum()),
            "pending_commands": len(st["pending"]),
            "pending_trips": sum(1 for x in st["pending"] if x["action"] == "disconnect"), "alarms": st["alarms"]}
