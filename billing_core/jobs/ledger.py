"""The ledger (电费收缴及账务) in the archive database: receivables, payments, refunds, adjustments.

Table ``ledger_entries`` of ``archive.duckdb`` (beside the archive's master data; created on first use),
one row per entry, **append-only**: nothing here issues UPDATE or DELETE on it — a correction is a new
entry (``gridhead ledger adjust``), a returned payment a ``refund``::

    entry_id           BIGINT   1, 2, ... in posting order
    customer_id        BIGINT   archive customers.customer_id
    kind               VARCHAR  bill | payment | refund | adjust | prepay_charge | prepay_trueup | late_fee | waiver
    debit_fen          BIGINT   receivable (应收): + bill, + prepayment deduction, ± adjustment, − true-up
    credit_fen         BIGINT   received (实收): + payment, − refund
    balance_after_fen  BIGINT   the customer's Σ debit − Σ credit after this entry (> 0: owes)
    period             VARCHAR  YYYY-MM the entry counts in (a bill's period; else the value date's month)
    value_date         DATE     when it takes effect (a bill: its due date; a payment: the day paid)
    key                VARCHAR  idempotency key, unique when not NULL: bill:<bill_id>, bank:<ref>,
                                counter:<ref>, prepay:<customer_id>:<date>, trueup:<bill_id>
    who, ts_utc, note  who posted it, when (UTC), why
    batch              VARCHAR  the posting it belongs to (one import, one bill posting, one prepay day)
    ref_entry_id       BIGINT   a refund: the payment it returns; a late fee: its bill; a waiver: its fee
    receipt_no         VARCHAR  a payment's receipt number (收据号), R<value date>-<entry id>

Table ``ledger_allocations`` (核销): which credit settled which receivable and how much, written by the
posting that made it possible (:meth:`Writer.allocate`: oldest first, a bill's late fee before the bill)
and never recomputed; dated views (:func:`arrears`) read it by the credits' value dates.  Late fees
(违约金) are posted by :func:`post_late_fees`; the rules are :class:`billing_core.ledger.Policy`.

**Balance = receivables − payments, always**: ``balance_after_fen`` is computed by
:func:`billing_core.ledger.running_balance` when the batch is written, and :func:`check` proves, customer
by customer, that the stored running balances follow from the entries and that every issued or released
bill is posted exactly once with its total.

**All or nothing.**  Each posting (a bank file, a bill run's bills, a prepayment day) is one DuckDB
transaction; a crash (even SIGKILL) before COMMIT leaves no entry of it — DuckDB's WAL replays only
committed transactions.  Writers serialise on ``<data>/ledger.lock`` (fcntl), so the keys checked before a
write are still free when it commits.

Posting bills: the issued and released bills of a period (``billing_core.jobs.bills``); held bills wait for their
release and are posted by the next posting.  A prepayment customer's bill is posted with its true-up:
the period's deductions (``prepay_charge``) reversed (``prepay_trueup``), so the month costs the bill.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import fcntl
import io
import os
import pathlib
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Union

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from gridhead.billing_core import ledger as L
from gridhead.protocols.errors import GridheadError, StorageError
from gridhead.storage import duck
from gridhead.storage.duck import arrow_table
from gridhead.storage.paths import Data, archive_path, data_dir
from gridhead.storage.results import BALANCES_SQL
from gridhead.storage.results import LEDGER_ALLOC as ALLOC
from gridhead.storage.results import LEDGER_TABLE as TABLE
from gridhead.storage.results import bills_root
from gridhead.storage.results import ledger_lock_path as lock_path

from . import bills as _bills

KINDS = ("bill", "payment", "refund", "adjust", "prepay_charge", "prepay_trueup", "late_fee", "waiver")
# what allocations (核销) settle: receivables and the credits that pay them.  Prepayment deductions and
# their true-up are left out: they are estimates the bill replaces (the true-up nets them to zero).
RECEIVABLE = "(kind IN ('bill', 'late_fee') OR (kind = 'adjust' AND debit_fen > 0))"
CREDIT = "((kind = 'payment' AND credit_fen > 0) OR (kind IN ('adjust', 'waiver') AND debit_fen < 0))"
# a payment's receipt number (收据号): R<value date YYYYMMDD>-<entry id>, unique as the entry id is; stored
# with the entry (computed by DuckDB as the entry is inserted), so a reprint shows the number first printed
# (the date by arithmetic: DuckDB's strftime cost 1.3 s per million payments here, this 0.05 s)
RECEIPT_NO = ("CASE WHEN kind = 'payment' THEN 'R' || (year(value_date) * 10000 + month(value_date) * 100 "
              "+ day(value_date))::VARCHAR || '-' || lpad(entry_id::VARCHAR, 8, '0') END")
DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    entry_id BIGINT NOT NULL, customer_id BIGINT NOT NULL, kind VARCHAR NOT NULL,
    debit_fen BIGINT NOT NULL, credit_fen BIGINT NOT NULL, balance_after_fen BIGINT NOT NULL,
    period VARCHAR NOT NULL, value_date DATE NOT NULL, key VARCHAR, who VARCHAR NOT NULL,
    ts_utc TIMESTAMPTZ NOT NULL, note VARCHAR, batch VARCHAR NOT NULL, ref_entry_id BIGINT, receipt_no VARCHAR);
ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS ref_entry_id BIGINT;
ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS receipt_no VARCHAR;
CREATE TABLE IF NOT EXISTS {ALLOC} (credit_entry_id BIGINT NOT NULL, debit_entry_id BIGINT NOT NULL,
    customer_id BIGINT NOT NULL, amount_fen BIGINT NOT NULL, batch VARCHAR NOT NULL, ts_utc TIMESTAMPTZ NOT NULL);
"""
BANK_COLUMNS = ("ref", "customer_no", "amount_yuan", "paid_on")
MAX_ERRORS_SHOWN = 20


class LedgerError(GridheadError):
    """A posting that cannot be done; nothing was written.  ``errors``: every bad row, one line each."""

    exit_code = 1

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or [message]


# a query's parameters: positional ($1, ?) or named ($name)
Params = Union[Sequence[object], Mapping[str, object], None]


def _count_rows(con: duckdb.DuckDBPyConnection, sql: str, params: Params = None) -> int:
    """The one number of a ``SELECT count(*)`` / ``max`` statement."""
    return int(_one(con.execute(sql, params or [])))


def _row(cur: duckdb.DuckDBPyConnection) -> tuple[Any, ...]:
    """The row of a statement that gives one (an aggregate, or the row just written)."""
    row = cur.fetchone()
    assert row is not None
    return row


def _one(cur: duckdb.DuckDBPyConnection) -> Any:
    """The value of a statement that gives one row of one column."""
    return _row(cur)[0]


class Writer:
    """The ledger opened for writing: the writers' lock, a connection, the table ensured."""

    def __init__(self, data: Data) -> None:
        self.data = data_dir(data)
        arch = archive_path(self.data)
        if not arch.exists():
            raise StorageError(f"{arch}: no archive (run `gridhead archive import` or `gridhead gen` first)")
        self._lock = open(lock_path(self.data), "a+")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            self.con = duck.connect(str(arch))
            fresh = not _count_rows(self.con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = $t",
                                    {"t": ALLOC})
            self.con.execute(DDL)
            if fresh:               # a ledger from before allocations: settle what it holds, once
                old = self.columns(f"SELECT DISTINCT customer_id FROM {TABLE}")["customer_id"]
                if len(old):
                    self.allocate(old, batch_id("alloc"))
        except duckdb.Error as exc:
            self._lock.close()
            raise StorageError(f"{arch}: {str(exc).splitlines()[0]}") from None

    def close(self) -> None:
        self.con.close()
        self._lock.close()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- helpers used inside a transaction ---------------------------------------------------------
    def columns(self, sql: str, params: Params = None) -> dict[str, np.ndarray]:
        t = arrow_table(self.con.execute(sql, params or []))
        return {n: t.column(n).to_numpy(zero_copy_only=False) for n in t.column_names}

    def query(self, sql: str, params: Params = None) -> pa.Table:
        return arrow_table(self.con.execute(sql, params or []))

    def balances_of(self, customer_ids: np.ndarray) -> np.ndarray:
        """Current balance of each given customer (0 for one without entries), by the stored running balance."""
        cur = self.columns(f"SELECT customer_id, arg_max(balance_after_fen, entry_id) AS b FROM {TABLE} "
                           f"GROUP BY customer_id")
        return lookup(cur["customer_id"], cur["b"], customer_ids, 0)

    def append(self, cols: Mapping[str, Any], who: str, batch: str, ts: dt.datetime | None = None) -> int:
        """Append entries (columns customer_id, kind, debit_fen, credit_fen, period, value_date, key, note)
        with their running balances; the caller holds the transaction.  Returns the number written."""
        n = len(cols["customer_id"])
        if n == 0:
            return 0
        cust = np.asarray(cols["customer_id"], np.int64)
        delta = np.asarray(cols["debit_fen"], np.int64) - np.asarray(cols["credit_fen"], np.int64)
        after = L.running_balance(cust, delta, self.balances_of(cust))
        first = _count_rows(self.con, f"SELECT coalesce(max(entry_id), 0) + 1 FROM {TABLE}")
        ts = ts or dt.datetime.now(dt.timezone.utc)
        ids = pa.array(np.arange(first, first + n, dtype=np.int64))
        kind = _text(cols["kind"], n)
        dates = _dates(cols["value_date"], n)
        tbl = pa.table({
            "entry_id": ids,
            "customer_id": pa.array(cust), "kind": kind,
            "debit_fen": pa.array(np.asarray(cols["debit_fen"], np.int64)),
            "credit_fen": pa.array(np.asarray(cols["credit_fen"], np.int64)),
            "balance_after_fen": pa.array(after), "period": _text(cols["period"], n),
            "value_date": dates, "key": _text(cols.get("key"), n),
            "who": _text(who, n), "ts_utc": pa.array(np.full(n, np.datetime64(ts.replace(tzinfo=None), "us")),
                                                     pa.timestamp("us", "UTC")),
            "note": _text(cols.get("note"), n), "batch": _text(batch, n),
            "ref_entry_id": pa.array(np.asarray(cols["ref_entry_id"], np.int64)) if cols.get("ref_entry_id") is not None
            else pa.nulls(n, pa.int64()),
            "receipt_no": pa.nulls(n, pa.string())})
        self.con.register("_new_entries", tbl)
        try:
            self.con.execute(f"INSERT INTO {TABLE} BY NAME SELECT * REPLACE ({RECEIPT_NO} AS receipt_no) FROM _new_entries")
        finally:
            self.con.unregister("_new_entries")
        return n

    def allocate(self, customer_ids: npt.ArrayLike, batch: str, ts: dt.datetime | None = None, policy: L.Policy | None = None) -> int:
        """Settle these customers' open receivables with their unallocated credits, oldest first, and
        store each settlement (核销) in ``ledger_allocations`` (the caller holds the transaction).

        Receivables in order: by the due date of the bill they belong to (a late fee belongs to its bill),
        the late fee before its bill (``policy.late_fee_first``), then posting order.  Credits in order of
        value date, then posting: payments net of the refunds linked to them, credit adjustments, waivers.
        What is stored is never recomputed: a later receivable only takes what is still unallocated.
        Returns the number of allocation rows written."""
        policy = policy or L.Policy()
        owing = self.columns(f"SELECT DISTINCT customer_id FROM {TABLE} WHERE {RECEIVABLE}")["customer_id"]
        cid = _distinct(np.asarray(customer_ids, np.int64))
        cid = cid[np.isin(cid, owing.astype(np.int64))]        # only customers with a receivable at all
        if not len(cid):
            return 0
        self.con.register("_who", pa.table({"customer_id": pa.array(cid)}))
        try:
            rec = self.columns(f"""
                WITH done AS (SELECT debit_entry_id AS entry_id, sum(amount_fen) AS done FROM {ALLOC}
                              WHERE customer_id IN (SELECT customer_id FROM _who) GROUP BY 1)
                SELECT e.entry_id, e.customer_id, (e.debit_fen - coalesce(d.done, 0))::BIGINT AS open
                FROM {TABLE} e LEFT JOIN done d USING (entry_id)
                LEFT JOIN {TABLE} b ON e.kind = 'late_fee' AND b.entry_id = e.ref_entry_id
                WHERE e.customer_id IN (SELECT customer_id FROM _who) AND {RECEIVABLE.replace('kind', 'e.kind')
                                                                            .replace('debit_fen', 'e.debit_fen')}
                  AND e.debit_fen - coalesce(d.done, 0) > 0
                ORDER BY e.customer_id, coalesce(b.value_date, e.value_date), coalesce(b.entry_id, e.entry_id),
                         CASE WHEN e.kind = 'late_fee' THEN $lf ELSE 1 - $lf END, e.entry_id""",
                               {"lf": 0 if policy.late_fee_first else 1})
            if not len(rec["entry_id"]):
                return 0
            self.con.unregister("_who")
            self.con.register("_who", pa.table({"customer_id": pa.array(_distinct(rec["customer_id"].astype(np.int64)))}))
            cred = self.columns(f"""
                WITH used AS (SELECT credit_entry_id AS entry_id, sum(amount_fen) AS used FROM {ALLOC}
                              WHERE customer_id IN (SELECT customer_id FROM _who) GROUP BY 1),
                     ret AS (SELECT ref_entry_id AS entry_id, -sum(credit_fen) AS refunded FROM {TABLE}
                             WHERE kind = 'refund' AND customer_id IN (SELECT customer_id FROM _who) GROUP BY 1)
                SELECT e.entry_id, e.customer_id,
                       (CASE WHEN e.kind = 'payment' THEN e.credit_fen ELSE -e.debit_fen END
                        - coalesce(r.refunded, 0) - coalesce(u.used, 0))::BIGINT AS avail
                FROM {TABLE} e LEFT JOIN used u USING (entry_id) LEFT JOIN ret r USING (entry_id)
                WHERE e.customer_id IN (SELECT customer_id FROM _who)
                  AND {CREDIT.replace('kind', 'e.kind').replace('debit_fen', 'e.debit_fen').replace('credit_fen', 'e.credit_fen')}
                  AND avail > 0
                ORDER BY e.customer_id, e.value_date, e.entry_id""")
        finally:
            self.con.unregister("_who")
        ri, ci, amt = L.fifo_allocate(rec["customer_id"], rec["open"], cred["customer_id"], cred["avail"])
        return self.write_allocations(cred["entry_id"][ci], rec["entry_id"][ri], rec["customer_id"][ri], amt, batch, ts)

    def write_allocations(self, credit_ids: npt.ArrayLike, debit_ids: npt.ArrayLike, customer_ids: npt.ArrayLike,
                          amount: npt.ArrayLike, batch: str, ts: dt.datetime | None = None) -> int:
        n = len(np.asarray(amount))
        if n:
            ts = ts or dt.datetime.now(dt.timezone.utc)
            self.con.register("_alloc", pa.table({
                "credit_entry_id": pa.array(np.asarray(credit_ids, np.int64)),
                "debit_entry_id": pa.array(np.asarray(debit_ids, np.int64)),
                "customer_id": pa.array(np.asarray(customer_ids, np.int64)),
                "amount_fen": pa.array(np.asarray(amount, np.int64)), "batch": _text(batch, n),
                "ts_utc": pa.array(np.full(n, np.datetime64(ts.replace(tzinfo=None), "us")), pa.timestamp("us", "UTC"))}))
            try:
                self.con.execute(f"INSERT INTO {ALLOC} BY NAME SELECT * FROM _alloc")
            finally:
                self.con.unregister("_alloc")
        return n

    def taken_keys(self, keys: Sequence[str | None] | np.ndarray) -> np.ndarray:
        """Which of ``keys`` (strings) are already in the ledger (bool per key)."""
        keys = pa.array(np.asarray(keys, dtype=object), pa.string())
        if len(keys) == 0:
            return np.zeros(0, bool)
        self.con.register("_keys", pa.table({"key": keys, "i": pa.array(np.arange(len(keys)))}))
        try:
            hit = self.columns(f"SELECT k.i FROM _keys k SEMI JOIN {TABLE} e ON e.key = k.key")["i"]
        finally:
            self.con.unregister("_keys")
        out = np.zeros(len(keys), bool)
        out[hit.astype(np.int64)] = True
        return out

    def customer_ids(self, customer_nos: Sequence[str]) -> np.ndarray:
        """archive customer ids of 户号 strings (−1 unknown)."""
        c = self.columns("SELECT customer_id, customer_no FROM customers")
        idx = {no: i for no, i in zip(c["customer_no"], c["customer_id"])}
        return np.array([idx.get(str(n), -1) for n in customer_nos], np.int64)


def _distinct(a: np.ndarray) -> np.ndarray:
    """The sorted distinct values of an int64 array (a sort; numpy's hash-based unique was measured
    ~40x slower on a million customer ids here)."""
    a = np.sort(np.asarray(a, np.int64))
    return a[np.concatenate(([True], a[1:] != a[:-1]))] if len(a) else a


def lookup(keys: npt.ArrayLike, values: np.ndarray, want: npt.ArrayLike, default: int | np.integer[Any]
           ) -> np.ndarray:
    """values[keys == want[i]] for each i (default where absent), by a sort and a binary search."""
    keys = np.asarray(keys, np.int64)
    want = np.asarray(want, np.int64)
    if len(keys) == 0:
        return np.full(len(want), default, np.asarray(values).dtype if len(values) else np.int64)
    order = np.argsort(keys, kind="stable")
    k, v = keys[order], np.asarray(values)[order]
    pos = np.clip(np.searchsorted(k, want), 0, len(k) - 1)
    found: np.ndarray = np.where(k[pos] == want, v[pos], default)
    return found


def _text(v: object, n: int) -> pa.Array:
    if v is None:
        return pa.nulls(n, pa.string())
    if isinstance(v, str):
        return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([v])).cast(pa.string())
    if isinstance(v, pa.Array):
        return v.cast(pa.string())
    return pa.array(np.asarray(v, dtype=object), pa.string())


def _dates(v: object, n: int) -> pa.Array:
    if isinstance(v, dt.date):
        return pa.array(np.full(n, np.datetime64(v, "D")), pa.date32())
    return pa.array(np.asarray(v).astype("datetime64[D]"), pa.date32())


def _period_of(d: dt.date) -> str:
    return f"{d.year:04d}-{d.month:02d}"


def batch_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:12]}"


def _one_customer(w: Writer, customer_no: str) -> int:
    cid = int(w.customer_ids([customer_no])[0])
    if cid < 0:
        raise LedgerError(f"customer {customer_no!r}: no such 户号 in the archive")
    return cid


# --- posting -----------------------------------------------------------------------------------------
def post_bills(data: Data, period: str, who: str = "billing") -> dict[str, Any]:
    """Post the period's issued and released bills as receivables (idempotent: posted bills are skipped).

    A prepayment customer's bill comes with its true-up: the period's deductions not yet trued up,
    reversed.  Returns ``{period, posted, skipped, held, receivable_fen, trueup_fen}``.
    """
    start, end = _bills.period_bounds(period)
    tbl = _bills.read_bills(data, period)
    st = tbl.column("status").to_numpy(zero_copy_only=False).astype(str)
    ok = st != "held"
    ids = tbl.column("bill_id").to_numpy()[ok]
    cust = tbl.column("customer_id").to_numpy()[ok].astype(np.int64)
    total = tbl.column("total_fen").to_numpy()[ok].astype(np.int64)
    due = end + dt.timedelta(days=L.DUE_DAYS)
    batch = batch_id("bills")
    with Writer(data) as w:
        w.con.execute("BEGIN")
        try:
            keys = np.array([f"bill:{int(b)}" for b in ids], dtype=object)
            new = ~w.taken_keys(keys)
            n = w.append({"customer_id": cust[new], "kind": "bill", "debit_fen": total[new],
                          "credit_fen": np.zeros(int(new.sum()), np.int64), "period": period, "value_date": due,
                          "key": keys[new], "note": None}, who, batch)
            trued = _trueup(w, period, ids[new], cust[new], who, batch)
            w.allocate(cust[new], batch)
            w.con.execute("COMMIT")
        except BaseException:
            w.con.execute("ROLLBACK")
            raise
    return {"period": period, "posted": n, "skipped": int((~new).sum()), "held": int((~ok).sum()),
            "receivable_fen": int(total[new].sum()), "trueup_fen": trued}


def _trueup(w: Writer, period: str, bill_ids: np.ndarray, cust: np.ndarray, who: str, batch: str) -> int:
    """Reverse the period's prepayment deductions of the customers whose bill is posted now."""
    if len(cust) == 0:
        return 0
    w.con.register("_posted", pa.table({"customer_id": pa.array(cust), "bill_id": pa.array(bill_ids)}))
    try:
        d = w.columns(f"""SELECT p.customer_id, p.bill_id, sum(e.debit_fen)::BIGINT AS charged
                          FROM {TABLE} e JOIN _posted p USING (customer_id)
                          WHERE e.kind = 'prepay_charge' AND e.period = $p GROUP BY ALL ORDER BY 1""", {"p": period})
    finally:
        w.con.unregister("_posted")
    n = len(d["customer_id"])
    if n == 0:
        return 0
    start, end = _bills.period_bounds(period)
    w.append({"customer_id": d["customer_id"], "kind": "prepay_trueup", "debit_fen": -d["charged"].astype(np.int64),
              "credit_fen": np.zeros(n, np.int64), "period": period, "value_date": end,
              "key": np.array([f"trueup:{int(b)}" for b in d["bill_id"]], dtype=object),
              "note": f"{period} deductions reversed against the bill"}, who, batch)
    return int(-d["charged"].sum())


def add_entry(data: Data, customer_no: str, kind: str, amount_fen: int, by: str, ref: str | None = None,
              note: str | None = None, on: dt.date | None = None, payment: str | None = None,
              fee_entry: int | None = None, policy: L.Policy | None = None) -> dict[str, Any]:
    """One entry at the counter (``by`` and, but for a payment, ``note`` — who and why — are required):

    ``payment`` (0 < amount ≤ ``policy.max_payment_fen``; gets a receipt number); ``refund`` of the
    payment ``payment`` (its receipt number or reference), never more than the credit on hand nor what
    is left of that payment after its refunds and what it already settled; ``adjust`` (amount ≠ 0:
    + more receivable, − less); ``waiver`` (减免) of the late fee entry ``fee_entry``, never more than
    that fee less its earlier waivers.  A ``ref`` given twice is refused.  Allocations follow in the
    same transaction."""
    policy = policy or L.Policy()
    if kind not in ("payment", "refund", "adjust", "waiver"):
        raise LedgerError(f"kind {kind!r}: payment, refund, adjust or waiver")
    if not by or not by.strip():
        raise LedgerError("--by: who posts the entry is required")
    if kind != "adjust" and amount_fen <= 0:
        raise LedgerError(f"amount {amount_fen / 100:.2f}: a {kind} must be more than 0")
    if kind == "adjust" and amount_fen == 0:
        raise LedgerError("amount 0: an adjustment must change the balance")
    if kind != "payment" and not (note and note.strip()):
        raise LedgerError(f"--note: a{'n' if kind[0] in 'aeiou' else ''} {kind} needs its reason")
    if kind == "payment" and amount_fen > policy.max_payment_fen:
        raise LedgerError(f"amount {amount_fen / 100:.2f}: above the single-payment limit "
                          f"{policy.max_payment_fen / 100:.2f} yuan")
    if kind == "refund" and not payment:
        raise LedgerError("--payment: a refund names the payment it returns (receipt number or reference)")
    if kind == "waiver" and fee_entry is None:
        raise LedgerError("--fee: a waiver names the late fee entry it waives")
    on = on or dt.date.today()
    key = f"counter:{ref}" if ref else None
    batch = batch_id(kind)
    with Writer(data) as w:
        cid = _one_customer(w, customer_no)
        w.con.execute("BEGIN")
        try:
            if key and w.taken_keys([key])[0]:
                raise LedgerError(f"reference {ref!r}: already posted (a payment is taken once)")
            link = None
            if kind == "refund":
                assert payment                    # checked above: a refund names its payment
                link = _refundable(w, cid, customer_no, payment, amount_fen)
            elif kind == "waiver":
                assert fee_entry is not None      # checked above: a waiver names its late fee
                link = _waivable(w, cid, customer_no, int(fee_entry), amount_fen)
            debit = amount_fen if kind == "adjust" else -amount_fen if kind == "waiver" else 0
            credit = amount_fen if kind == "payment" else (-amount_fen if kind == "refund" else 0)
            w.append({"customer_id": np.array([cid]), "kind": kind, "debit_fen": np.array([debit]),
                      "credit_fen": np.array([credit]), "period": _period_of(on), "value_date": on,
                      "key": np.array([key], dtype=object), "note": note,
                      "ref_entry_id": None if link is None else np.array([link])}, by, batch)
            entry = _one(w.con.execute(f"SELECT max(entry_id) FROM {TABLE}"))
            if kind == "waiver":                   # a waiver settles its own fee first
                assert link is not None            # the fee it waives, found above
                open_ = _one(w.con.execute(f"SELECT f.debit_fen - coalesce(sum(a.amount_fen), 0) FROM {TABLE} f "
                                           f"LEFT JOIN {ALLOC} a ON a.debit_entry_id = f.entry_id WHERE f.entry_id = $f "
                                           f"GROUP BY f.debit_fen", {"f": link}))
                w.write_allocations([entry], [link], [cid], [min(int(open_), amount_fen)], batch)
            w.allocate([cid], batch, policy=policy)
            receipt = _one(w.con.execute(f"SELECT receipt_no FROM {TABLE} WHERE entry_id = $e", {"e": entry}))
            w.con.execute("COMMIT")
        except BaseException:
            w.con.execute("ROLLBACK")
            raise
        bal = int(w.balances_of(np.array([cid]))[0])
    return {"customer_no": customer_no, "customer_id": cid, "kind": kind, "amount_fen": amount_fen,
            "balance_fen": bal, "entry_id": int(entry), "receipt_no": receipt}


def _refundable(w: Writer, cid: int, customer_no: str, payment: str, amount_fen: int) -> int:
    """The entry id of the payment a refund returns, once the refund is checked against it (DOMAIN.md:
    refunds never exceed the credit on hand) — else LedgerError naming what is short."""
    got = w.con.execute(f"""
        SELECT p.entry_id, p.credit_fen,
               coalesce((SELECT -sum(credit_fen) FROM {TABLE} r WHERE r.kind = 'refund' AND r.ref_entry_id = p.entry_id), 0),
               coalesce((SELECT sum(amount_fen) FROM {ALLOC} a WHERE a.credit_entry_id = p.entry_id), 0)
        FROM {TABLE} p WHERE p.customer_id = $c AND p.kind = 'payment'
          AND (coalesce(p.receipt_no, {RECEIPT_NO.replace('kind', 'p.kind').replace('value_date', 'p.value_date')
                                       .replace('entry_id', 'p.entry_id')}) = $r
               OR p.key IN ('counter:' || $r, 'bank:' || $r))""", {"c": cid, "r": payment}).fetchone()
    if got is None:
        raise LedgerError(f"--payment {payment!r}: no payment of customer {customer_no} with that receipt or reference")
    pid, paid, refunded, settled = map(int, got)
    left = paid - refunded - settled
    on_hand = -int(w.balances_of(np.array([cid]))[0])
    if amount_fen > left:
        raise LedgerError(f"refund {amount_fen / 100:.2f}: payment {payment} has {left / 100:.2f} yuan left to return "
                          f"({paid / 100:.2f} paid, {refunded / 100:.2f} refunded, {settled / 100:.2f} settled bills)")
    if amount_fen > on_hand:
        raise LedgerError(f"refund {amount_fen / 100:.2f}: customer {customer_no} has {max(on_hand, 0) / 100:.2f} yuan "
                          f"credit on hand")
    return pid


def _waivable(w: Writer, cid: int, customer_no: str, fee: int, amount_fen: int) -> int:
    got = w.con.execute(f"""
        SELECT f.debit_fen, coalesce((SELECT -sum(debit_fen) FROM {TABLE} x WHERE x.kind = 'waiver'
                                      AND x.ref_entry_id = f.entry_id), 0)
        FROM {TABLE} f WHERE f.entry_id = $f AND f.customer_id = $c AND f.kind = 'late_fee'""",
                        {"f": fee, "c": cid}).fetchone()
    if got is None:
        raise LedgerError(f"--fee {fee}: not a late fee entry of customer {customer_no}")
    left = int(got[0]) - int(got[1])
    if amount_fen > left:
        raise LedgerError(f"waiver {amount_fen / 100:.2f}: late fee {fee} has {left / 100:.2f} yuan not yet waived")
    return fee


def import_payments(data: Data, path: str | os.PathLike[str], by: str = "bank-import", policy: L.Policy | None = None,
                    return_file: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Post a bank file (CSV with header ``ref,customer_no,amount_yuan,paid_on``) in one transaction.

    As banks send them (:func:`_parse_bank`): UTF-8 or GB18030/GBK, optionally a batch header line
    ``H,<batch no>,<count>,<total yuan>`` before the column header and a trailer ``T,<count>,<total yuan>``
    as the last line; when present, the count and total must agree with the rows.  A file with no rows is
    answered "0 payments" and writes nothing.

    Every row is checked first: a bad row — unknown 户号, an amount that is not yuan with ≤ 2 decimals,
    not positive or above ``policy.max_payment_fen``, a date that is not a calendar date, a reference
    empty, repeated in the file or already posted — refuses the whole file with one line per bad row
    (``file:row: column: reason``; rows count from 1 after the header).  A file posted before is thus
    refused whole, and changes nothing.  ``return_file``: the return file (回盘), written either way —
    per line ``applied`` (with its receipt number), ``refused`` (with the reason) or ``not applied``
    (a good line of a refused file), in the bank file's encoding.
    """
    p = pathlib.Path(path)
    if not p.is_file():
        raise LedgerError(f"{p}: no such file")
    t, meta = _parse_bank(p)
    n = t.num_rows
    ref, nos, amt, day = (pc.utf8_trim_whitespace(t.column(c)) for c in BANK_COLUMNS)
    # amounts: yuan with ≤ 2 decimals → fen, as text (never a float): "12" → "1200", "12.3" → "1230"
    amt_ok = pc.match_substring_regex(amt, r"^[0-9]{1,12}(\.[0-9]{1,2})?$")
    norm = pc.replace_substring_regex(pc.if_else(amt_ok, amt, "0"), r"^([0-9]+)$", r"\1.00")
    norm = pc.replace_substring_regex(norm, r"^([0-9]+)\.([0-9])$", r"\1.\20")
    fen = pc.cast(pc.replace_substring(norm, ".", ""), pa.int64())
    amt_ok = pc.and_(amt_ok, pc.greater(fen, 0))
    policy = policy or L.Policy()
    limit_ok = pc.or_(pc.invert(amt_ok), pc.less_equal(fen, policy.max_payment_fen))
    day_ok = _real_dates(day)
    ts = pc.strptime(pc.if_else(day_ok, day, "1970-01-01"), format="%Y-%m-%d", unit="s")
    ref_ok = pc.greater(pc.utf8_length(ref), 0)
    keys = pc.binary_join_element_wise("bank:", ref, "")
    total = int(pc.sum(pc.if_else(amt_ok, fen, 0)).as_py() or 0)
    for what, rec in (("header", meta.get("header")), ("trailer", meta.get("trailer"))):
        if rec and rec["count"] != n:
            raise LedgerError(f"{p}:{what}: count {rec['count']}, the file has {n} payment rows; nothing was imported")
        if rec and rec["total_fen"] != total:
            raise LedgerError(f"{p}:{what}: total {_yuan(rec['total_fen'])}, the rows add up to {_yuan(total)} yuan; "
                              "nothing was imported")
    if n == 0:
        _return_file(return_file, t, meta, [], None)
        return {"file": str(p), "rows": 0, "amount_fen": 0, "batch": None, "customer_ids": np.zeros(0, np.int64),
                "bank_batch": (meta.get("header") or {}).get("batch"), "note": "0 payments: the file has no rows"}
    checks = [(amt_ok, "amount_yuan", amt, "{!r} is not a positive amount in yuan with at most 2 decimals"),
              (day_ok, "paid_on", day, "{!r} is not a date YYYY-MM-DD"),
              (ref_ok, "ref", ref, "empty (a bank reference is required)"),
              (limit_ok, "amount_yuan", amt, "{!r} is above the single-payment limit "
               + f"{_yuan(policy.max_payment_fen)} yuan")]
    batch = batch_id("bank")
    with Writer(data) as w:
        w.con.register("_bank", pa.table({"i": pa.array(np.arange(n)), "key": keys, "customer_no": nos}))
        try:
            x = w.columns(f"""
                SELECT b.i, coalesce(c.customer_id, -1) AS cid,
                       row_number() OVER (PARTITION BY b.key ORDER BY b.i) > 1 AS dup, e.key IS NOT NULL AS taken
                FROM _bank b LEFT JOIN customers c ON c.customer_no = b.customer_no
                LEFT JOIN (SELECT key FROM {TABLE} WHERE key LIKE 'bank:%') e ON e.key = b.key ORDER BY b.i""")
        finally:
            w.con.unregister("_bank")
        cid = x["cid"].astype(np.int64)
        checks += [(pa.array(cid >= 0), "customer_no", nos, "{!r} is not a 户号 in the archive"),
                   (pa.array(~x["dup"].astype(bool)), "ref", ref, "{!r} repeated in the file"),
                   (pa.array(~x["taken"].astype(bool)), "ref", ref, "{!r} already posted")]
        errors = []
        for ok, col, vals, why in checks:
            bad = np.flatnonzero(~np.asarray(ok.to_numpy(zero_copy_only=False), bool))
            for i, v in zip(bad.tolist(), vals.take(pa.array(bad)).to_pylist()):
                errors.append((i, f"{col}: {why.format(v)}"))
        if errors:
            errors.sort()
            _return_file(return_file, t, meta, errors, None)
            lines = [f"{p}:{i + 1}: {msg}" for i, msg in errors]
            more = f" (and {len(lines) - 1} more bad rows)" if len(lines) > 1 else ""
            raise LedgerError(f"{lines[0]}{more}; nothing was imported", lines)
        dates = pc.cast(ts, pa.date32())
        periods = pc.strftime(ts, format="%Y-%m")
        w.con.execute("BEGIN")
        try:
            first = _one(w.con.execute(f"SELECT coalesce(max(entry_id), 0) + 1 FROM {TABLE}"))
            w.append({"customer_id": cid, "kind": "payment", "debit_fen": np.zeros(n, np.int64),
                      "credit_fen": fen.to_numpy(), "period": periods, "value_date": dates.to_numpy(zero_copy_only=False),
                      "key": keys, "note": f"bank file {p.name}"}, by, batch)
            w.allocate(cid, batch, policy=policy)
            if return_file:
                receipts = w.query(f"SELECT receipt_no FROM {TABLE} WHERE entry_id >= $f ORDER BY entry_id",
                                   {"f": first}).column(0)
            w.con.execute("COMMIT")
        except BaseException:
            w.con.execute("ROLLBACK")
            raise
    if return_file:
        _return_file(return_file, t, meta, [], receipts)
    return {"file": str(p), "rows": n, "amount_fen": int(pc.sum(fen).as_py() or 0), "batch": batch,
            "customer_ids": _distinct(cid), "bank_batch": (meta.get("header") or {}).get("batch"),
            "encoding": meta["encoding"]}


def _yuan(fen: int) -> str:
    return f"{'-' if fen < 0 else ''}{abs(fen) // 100}.{abs(fen) % 100:02d}"


def _return_file(path: str | os.PathLike[str] | None, t: pa.Table, meta: dict[str, Any],
                 errors: list[tuple[int, str]], receipts: Sequence[str | None] | None) -> None:
    """The return file (回盘) of a bank file: its rows with ``result`` (applied / refused / not applied),
    the receipt number of each applied payment and the reason of each refused row (all reasons of a
    row, joined by "; "), written in the bank file's own encoding."""
    if not path:
        return
    n = t.num_rows
    why: dict[int, list[str]] = {}
    for i, msg in errors:
        why.setdefault(i, []).append(msg)
    if receipts is not None:
        result = pa.array(["applied"] * n, pa.string())
        reason = pa.nulls(n, pa.string())
    else:
        result = pa.array(["refused" if i in why else "not applied" for i in range(n)], pa.string())
        reason = pa.array(["; ".join(why[i]) if i in why else "the file was refused for other rows"
                           for i in range(n)], pa.string())
        receipts = pa.nulls(n, pa.string())
    out = pa.table({**{c: t.column(c) for c in BANK_COLUMNS}, "result": result, "receipt_no": receipts,
                    "reason": reason})
    buf = io.BytesIO()
    pacsv.write_csv(out, buf, pacsv.WriteOptions(quoting_style="needed"))
    data = buf.getvalue()
    if meta["encoding"] != "utf-8":
        data = data.decode("utf-8").encode(meta["encoding"])
    pathlib.Path(path).write_bytes(data)


def _real_dates(day: pa.Array) -> pa.Array:
    """True where the text is a calendar date YYYY-MM-DD.  Arrow's strptime rolls impossible days over
    (2026-06-31 → 07-01), so each distinct text is checked by :meth:`datetime.date.fromisoformat`, which
    refuses them; a bank file has few distinct dates, so this is one Python call per distinct value."""
    shape = pc.match_substring_regex(day, r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
    good = []
    for s in pc.unique(pc.filter(day, shape)).to_pylist():
        try:
            dt.date.fromisoformat(s)
            good.append(s)
        except ValueError:
            pass
    return pc.and_(shape, pc.is_in(day, value_set=pa.array(good, pa.string())))


def _parse_bank(p: pathlib.Path) -> tuple[pa.Table, dict[str, Any]]:
    """The bank file as string columns (Arrow's CSV reader) and what surrounds them: ``{encoding,
    header, trailer}``.  Encoding: UTF-8 (a BOM allowed), else GB18030 — the superset of GBK that
    Chinese banks write — else the file is refused.  A first line ``H,<batch>,<count>,<total yuan>`` is
    the batch header, a last line ``T,<count>,<total yuan>`` the trailer (both optional).  A malformed
    file is re-read by the csv module for the row and reason of the first bad line."""
    raw = p.read_bytes()
    enc = "utf-8"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        try:
            raw = raw.decode("gb18030").encode("utf-8")
            enc = "gb18030"
        except UnicodeDecodeError as exc:
            raise LedgerError(f"{p}: neither UTF-8 nor GB18030/GBK text ({exc.reason} at byte {exc.start})") from None
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    meta: dict[str, Any] = {"encoding": enc, "header": None, "trailer": None}
    if raw[:2] in (b"H,", b"h,"):
        line, _, raw = raw.partition(b"\n")
        f = _record(p, "header", line, 4)
        meta["header"] = {"batch": f[1], "count": _count(p, "header", f[2]), "total_fen": _total(p, "header", f[3])}
    body = raw.rstrip(b"\r\n")
    cut = body.rfind(b"\n")
    if cut >= 0 and body[cut + 1:cut + 3] in (b"T,", b"t,"):
        f = _record(p, "trailer", body[cut + 1:], 3)
        meta["trailer"] = {"count": _count(p, "trailer", f[1]), "total_fen": _total(p, "trailer", f[2])}
        raw = body[:cut + 1]
    try:
        t = pacsv.read_csv(io.BytesIO(raw), convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in BANK_COLUMNS}, strings_can_be_null=False))
    except pa.ArrowInvalid:
        try:
            cols = _read_bank_csv(p, raw.decode("utf-8"))
        except csv.Error as exc:
            raise LedgerError(f"{p}: not a CSV file ({exc})") from None
        return pa.table({c: pa.array(v, pa.string()) for c, v in zip(BANK_COLUMNS, cols)}), meta
    header = [h.strip() for h in t.column_names]
    missing = [c for c in BANK_COLUMNS if c not in header]
    if missing:
        raise LedgerError(f"{p}:0: {missing[0]}: column missing from the header (expected {','.join(BANK_COLUMNS)})")
    t = t.rename_columns(header)
    return pa.table({c: t.column(c).combine_chunks() if t.num_rows else pa.array([], pa.string())
                     for c in BANK_COLUMNS}), meta


def _record(p: pathlib.Path, what: str, line: bytes, fields: int) -> list[str]:
    f = next(csv.reader([line.decode("utf-8").strip()]), [])
    if len(f) != fields:
        raise LedgerError(f"{p}:{what}: {len(f)} fields, a batch {what} has {fields}; nothing was imported")
    return [x.strip() for x in f]


def _count(p: pathlib.Path, what: str, text: str) -> int:
    if not text.isdigit():
        raise LedgerError(f"{p}:{what}: count {text!r} is not a number; nothing was imported")
    return int(text)


def _total(p: pathlib.Path, what: str, text: str) -> int:
    fen = L.yuan_to_fen(text)
    if fen is None:
        raise LedgerError(f"{p}:{what}: total {text!r} is not an amount in yuan; nothing was imported")
    return fen


def _read_bank_csv(p: pathlib.Path, text: str) -> list[list[str]]:
    """The bank file's columns as lists of str (the header must name BANK_COLUMNS, in any order)."""
    rd = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip() for h in next(rd, [])]
    missing = [c for c in BANK_COLUMNS if c not in header]
    if missing:
        raise LedgerError(f"{p}:0: {missing[0]}: column missing from the header (expected {','.join(BANK_COLUMNS)})")
    pos = [header.index(c) for c in BANK_COLUMNS]
    cols: list[list[str]] = [[], [], [], []]
    for k, row in enumerate(rd, 1):
        if len(row) != len(header):
            raise LedgerError(f"{p}:{k}: (row): {len(row)} fields, the header has {len(header)}; nothing was imported")
        for j, c in enumerate(pos):
            cols[j].append(row[c].strip())
    return cols


# --- reading -------------------------------------------------------------------------------------------
class Reader:
    """The ledger opened read-only (no lock: readers see the last committed state)."""

    def __init__(self, data: Data) -> None:
        arch = archive_path(data)
        if not arch.exists():
            raise StorageError(f"{arch}: no archive (run `gridhead archive import` or `gridhead gen` first)")
        try:
            self.con = duck.connect(str(arch), read_only=True)
        except duckdb.Error as exc:
            raise StorageError(f"{arch}: {str(exc).splitlines()[0]}") from None
        self.has = bool(_count_rows(self.con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = $t",
                                    {"t": TABLE}))
        self.has_alloc = bool(_count_rows(self.con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = $t",
                                          {"t": ALLOC}))

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def query(self, sql: str, params: Params = None) -> pa.Table:
        return arrow_table(self.con.execute(sql, params or {}))

    def columns(self, sql: str, params: Params = None) -> dict[str, np.ndarray]:
        t = self.query(sql, params)
        return {n: t.column(n).to_numpy(zero_copy_only=False) for n in t.column_names}


def balances(data: Data) -> pa.Table:
    """Every customer's balance: ``customer_id, customer_no, name, category, prepaid, receivable_fen,
    received_fen, balance_fen`` (balance = receivable − received; customers without entries have 0)."""
    with Reader(data) as r:
        return r.query(BALANCES_SQL.format(e=TABLE if r.has else _EMPTY, c="customers"))


_EMPTY = ("(SELECT NULL::BIGINT AS customer_id, NULL::BIGINT AS debit_fen, NULL::BIGINT AS credit_fen, "
          "NULL::BIGINT AS entry_id, NULL::BIGINT AS balance_after_fen WHERE false)")
def check(data: Data) -> dict[str, Any]:
    """Prove the balance identity for every customer; raise :class:`LedgerError` naming the first that fails.

    Per customer: the stored running balance of each entry equals Σ debit − Σ credit of its entries up
    to it (so the last one is the balance); entry ids are 1..N without gaps or repeats; keys are unique;
    every issued or released bill of every published period is posted once, for its total.
    """
    with Reader(data) as r:
        if not r.has:
            return {"customers": 0, "entries": 0, "bills_checked": 0, "ok": True}
        bad = r.query(f"""
            WITH x AS (SELECT customer_id, entry_id, balance_after_fen,
                        sum(debit_fen - credit_fen) OVER (PARTITION BY customer_id ORDER BY entry_id) AS run
                       FROM {TABLE})
            SELECT x.customer_id, c.customer_no, x.entry_id, x.balance_after_fen, x.run::BIGINT AS run
            FROM x LEFT JOIN customers c USING (customer_id)
            WHERE x.balance_after_fen <> x.run ORDER BY x.customer_id, x.entry_id LIMIT 1""").to_pylist()
        if bad:
            b = bad[0]
            raise LedgerError(f"customer {b['customer_no']} (id {b['customer_id']}): entry {b['entry_id']} records "
                              f"balance {b['balance_after_fen']} fen, its entries add up to {b['run']} fen")
        n, lo, hi, distinct = _row(r.con.execute(
            f"SELECT count(*), min(entry_id), max(entry_id), count(DISTINCT entry_id) FROM {TABLE}"))
        if n and (lo != 1 or hi != n or distinct != n):
            raise LedgerError(f"ledger: entry ids are not 1..{n} without gaps or repeats (min {lo}, max {hi}, "
                              f"{distinct} distinct): entries were removed or rewritten")
        dup = r.con.execute(f"SELECT key, count(*) FROM {TABLE} WHERE key IS NOT NULL GROUP BY key "
                            f"HAVING count(*) > 1 ORDER BY key LIMIT 1").fetchone()
        if dup:
            raise LedgerError(f"ledger: key {dup[0]!r} posted {dup[1]} times")
        orphan = r.con.execute(f"SELECT customer_id FROM {TABLE} ANTI JOIN customers USING (customer_id) LIMIT 1"
                               ).fetchone()
        if orphan:
            raise LedgerError(f"ledger: customer id {orphan[0]} is not in the archive")
        if r.has_alloc:                # no receivable settled beyond its amount, no credit spent twice
            over = r.con.execute(f"""
                WITH a AS (SELECT debit_entry_id AS d, credit_entry_id AS c, amount_fen FROM {ALLOC}),
                     ret AS (SELECT ref_entry_id AS c, -sum(credit_fen) AS back FROM {TABLE} WHERE kind = 'refund' GROUP BY 1)
                SELECT 'receivable', e.entry_id FROM a JOIN {TABLE} e ON e.entry_id = a.d
                GROUP BY e.entry_id, e.debit_fen HAVING sum(a.amount_fen) > e.debit_fen
                UNION ALL
                SELECT 'credit', e.entry_id FROM a JOIN {TABLE} e ON e.entry_id = a.c LEFT JOIN ret ON ret.c = e.entry_id
                GROUP BY e.entry_id, e.credit_fen, e.debit_fen, ret.back
                HAVING sum(a.amount_fen) + coalesce(ret.back, 0) > greatest(e.credit_fen, -e.debit_fen)
                LIMIT 1""").fetchone()
            if over:
                raise LedgerError(f"ledger: {over[0]} entry {over[1]} is allocated beyond its amount")
        customers = _one(r.con.execute(f"SELECT count(DISTINCT customer_id) FROM {TABLE}"))
        posted = r.columns(f"SELECT key, customer_id, debit_fen FROM {TABLE} WHERE kind = 'bill'")
    checked = _check_bills(data, posted)
    return {"customers": int(customers), "entries": int(n), "bills_checked": checked, "ok": True}


def _check_bills(data: Data, posted: dict[str, np.ndarray]) -> int:
    root = bills_root(data)
    periods = sorted(d.name.split("=", 1)[1] for d in root.glob("period=*") if (d / "bills.parquet").exists())
    got = {k: (int(c), int(a)) for k, c, a in zip(posted["key"], posted["customer_id"], posted["debit_fen"])}
    checked = 0
    for period in periods:
        tbl = _bills.read_bills(data, period)
        st = tbl.column("status").to_numpy(zero_copy_only=False).astype(str)
        for b, c, no, t, s in zip(tbl.column("bill_id").to_numpy(), tbl.column("customer_id").to_numpy(),
                                  tbl.column("customer_no").to_pylist(), tbl.column("total_fen").to_numpy(), st):
            k = f"bill:{int(b)}"
            if k in got:
                checked += 1
                if got[k] != (int(c), int(t)):
                    raise LedgerError(f"customer {no}: bill {int(b)} posted as {got[k][1]} fen, the bill says {int(t)}")
            elif s == "held":
                continue
    return checked


def _open_as_of(x: Reader | Writer, as_of: dt.date, policy: L.Policy, customers: Sequence[int] | None = None
                ) -> dict[str, np.ndarray]:
    """Every receivable (bill, late fee, debit adjustment) with value date on or before ``as_of``, as the
    ledger stood on that day (DOMAIN.md: a dated view counts only what was posted and paid — value date —
    on or before it): ``out`` = amount − the stored allocations from credits dated on or before ``as_of``.

    For a bill also its late fee (违约金, :data:`billing_core.ledger.LATE_FEE_RULES`): every part settled
    after the due date accrued from the day after the due date to the day it was paid (a customer who
    paid late owes it too), the part still open accrues to ``as_of``; the exact parts are added, rounded
    once, and at least ``policy.late_fee_min_fen``.  ``fee_due`` = that fee less the late fees already
    posted for the bill (value date on or before ``as_of``).  ``x``: a Reader or a Writer."""
    d = {"d": as_of}
    only = ""
    if customers is not None:
        only = " AND e.customer_id IN (" + ",".join(str(int(c)) for c in customers) + ")" if len(customers) else " AND false"
    rec = x.columns(f"""
        SELECT e.entry_id, e.customer_id, e.kind, e.period, e.debit_fen AS amount, e.value_date AS due,
               c.category = 'residential' AS residential
        FROM {TABLE} e JOIN customers c USING (customer_id)
        WHERE {RECEIVABLE.replace('kind', 'e.kind').replace('debit_fen', 'e.debit_fen')} AND e.value_date <= $d{only}
        ORDER BY e.entry_id""", d)
    paid = x.columns(f"""
        SELECT a.debit_entry_id AS entry_id, a.amount_fen, c.value_date AS paid_on
        FROM {ALLOC} a JOIN {TABLE} c ON c.entry_id = a.credit_entry_id
        WHERE c.value_date <= $d ORDER BY a.debit_entry_id""", d)
    posted = x.columns(f"""SELECT ref_entry_id AS entry_id, sum(debit_fen)::BIGINT AS fees FROM {TABLE}
                           WHERE kind = 'late_fee' AND value_date <= $d GROUP BY 1""", d)
    ids = rec["entry_id"].astype(np.int64)
    n = len(ids)
    due = rec["due"].astype("datetime64[D]").astype(np.int64) if n else np.zeros(0, np.int64)
    res = rec["residential"].astype(bool)
    bill = rec["kind"].astype(object) == "bill" if n else np.zeros(0, bool)
    pid = paid["entry_id"].astype(np.int64)
    pos = np.clip(np.searchsorted(ids, pid), 0, max(n - 1, 0))
    mine = (ids[pos] == pid) if n else np.zeros(len(pid), bool)         # allocations to the receivables here
    pos, amt = pos[mine], paid["amount_fen"].astype(np.int64)[mine]
    settled = np.bincount(pos, amt, n).astype(np.int64) if n else np.zeros(0, np.int64)
    out = rec["amount"].astype(np.int64) - settled
    asof = L.days_of(as_of)
    on = paid["paid_on"].astype("datetime64[D]").astype(np.int64)[mine] if len(amt) else np.zeros(0, np.int64)
    exact = np.zeros(n, np.int64)
    if len(amt):
        exact += np.bincount(pos, L.late_fee_exact(amt, due[pos], np.minimum(on, asof), res[pos]), n).astype(np.int64)
    exact += L.late_fee_exact(out, due, asof, res)
    fee = np.where(bill, L.late_fee_charged(exact, policy), 0)
    fee_posted = lookup(posted["entry_id"].astype(np.int64), posted["fees"].astype(np.int64), ids, 0)
    rec.update(entry_id=ids, due=due, out=out, fee=fee, fee_due=np.maximum(fee - fee_posted, 0))
    return rec


def post_late_fees(data: Data, as_of: dt.date, by: str = "billing", policy: L.Policy | None = None,
                   today: dt.date | None = None) -> dict[str, Any]:
    """Post the late fees (违约金) accrued up to ``as_of`` as receivables (kind ``late_fee``, one entry per
    bill, linked to it, key ``latefee:<bill entry>:<as_of>``): per bill what :func:`_open_as_of` says is
    accrued and not yet posted — bills still open and bills paid after their due date alike.  Idempotent
    for a date; a later date posts only the growth.  Returns ``{as_of, posted, amount_fen}``."""
    policy = policy or L.Policy()
    if as_of > (today or dt.date.today()):
        raise LedgerError(f"--as-of {as_of}: in the future (late fees are posted for days that have passed)")
    batch = batch_id("latefee")
    with Writer(data) as w:
        w.con.execute("BEGIN")
        try:
            r = _open_as_of(w, as_of, policy)
            sel = r["fee_due"] > 0
            keys = np.array([f"latefee:{int(e)}:{as_of}" for e in r["entry_id"][sel]], dtype=object)
            new = ~w.taken_keys(keys) if len(keys) else np.zeros(0, bool)
            cid = r["customer_id"][sel].astype(np.int64)[new]
            fee = r["fee_due"][sel][new]
            bills_of = r["entry_id"][sel][new]
            per = np.asarray(r["period"], object)[sel][new]
            n = w.append({"customer_id": cid, "kind": "late_fee", "debit_fen": fee, "credit_fen": np.zeros(len(cid), np.int64),
                          "period": _period_of(as_of), "value_date": as_of, "key": keys[new],
                          "note": np.array([f"违约金 of the {p} bill to {as_of}" for p in per], dtype=object),
                          "ref_entry_id": bills_of}, by, batch)
            w.allocate(cid, batch, policy=policy)
            w.con.execute("COMMIT")
        except BaseException:
            w.con.execute("ROLLBACK")
            raise
    return {"as_of": str(as_of), "posted": n, "amount_fen": int(fee.sum())}


def arrears(data: Data, as_of: dt.date, policy: L.Policy | None = None, customer: str | None = None) -> pa.Table:
    """Arrears (欠费) on ``as_of`` with late fees (违约金) and aging, one row per receivable in arrears or
    with a late fee not yet posted, worst first — the reminder list (催费).  Prepayment customers are in
    it where they owe (a posted bill not settled); ``customer``: one 户号 only."""
    policy = policy or L.Policy()
    with Reader(data) as r:
        old = r.has and not r.has_alloc
    if old:                       # a ledger from before allocations: settle it once (Writer does), then read
        Writer(data).close()
    with Reader(data) as r:
        cust = r.columns("SELECT customer_id, customer_no, name, category, prepaid FROM customers")
        if not r.has or not r.has_alloc:
            rec = {k: np.zeros(0, np.int64) for k in ("customer_id", "entry_id", "out", "due", "fee_due")}
            rec.update(kind=np.zeros(0, object), period=np.zeros(0, object))
        else:
            only = None
            if customer is not None:
                only = [int(c) for c, no in zip(cust["customer_id"], cust["customer_no"]) if str(no) == customer]
                if not only:
                    raise LedgerError(f"--customer {customer!r}: no such 户号 in the archive")
            rec = _open_as_of(r, as_of, policy, only)
    return _arrears_table(rec, cust, as_of)


def _arrears_table(rec: dict[str, np.ndarray], cust: dict[str, np.ndarray], as_of: dt.date) -> pa.Table:
    asof = L.days_of(as_of)
    late_days = asof - rec["due"].astype(np.int64)
    sel = ((rec["out"] > 0) & (late_days > 0)) | (rec["fee_due"] > 0)
    cid = rec["customer_id"][sel].astype(np.int64)
    cat = lookup(cust["customer_id"], np.arange(len(cust["customer_id"])), cid, -1)

    def of(col: str, typ: pa.DataType) -> pa.Array:
        return pa.array(np.asarray(cust[col], object)[cat] if len(cid) else [], typ)

    out = rec["out"][sel].astype(np.int64)
    fee = rec["fee_due"][sel].astype(np.int64)
    bucket = L.aging_bucket(late_days[sel])
    tbl = pa.table({
        "customer_id": pa.array(cid), "customer_no": of("customer_no", pa.string()), "name": of("name", pa.string()),
        "category": of("category", pa.string()), "prepaid": of("prepaid", pa.bool_()),
        "kind": pa.array(np.asarray(rec["kind"], object)[sel], pa.string()),
        "period": pa.array(np.asarray(rec["period"], object)[sel], pa.string()),
        "entry_id": pa.array(rec["entry_id"][sel].astype(np.int64)),
        "due_date": pa.array(rec["due"][sel].astype("datetime64[D]"), pa.date32()),
        "days_late": pa.array(late_days[sel].astype(np.int64)),
        "aging": pa.array(np.array([a[0] for a in L.AGING] + [""], object)[bucket], pa.string()),
        "arrears_fen": pa.array(out), "late_fee_fen": pa.array(fee), "total_due_fen": pa.array(out + fee),
    })
    order: np.ndarray | list[int] = (np.lexsort((tbl.column("entry_id").to_numpy(), -tbl.column("days_late").to_numpy()))
                                     if tbl.num_rows else [])
    return tbl.take(pa.array(order, pa.int64())) if tbl.num_rows else tbl


def summarise_arrears(tbl: pa.Table) -> dict[str, Any]:
    """The report's first lines: customers and receivables in arrears, amounts, by aging bucket."""
    a = tbl.column("arrears_fen").to_numpy() if tbl.num_rows else np.zeros(0, np.int64)
    f = tbl.column("late_fee_fen").to_numpy() if tbl.num_rows else np.zeros(0, np.int64)
    aging = tbl.column("aging").to_pylist()
    pre = tbl.column("prepaid").to_pylist()
    cust = tbl.column("customer_id").to_numpy() if tbl.num_rows else np.zeros(0, np.int64)
    by: dict[str, int] = {}
    for lab, x in zip(aging, a.tolist()):
        by[lab] = by.get(lab, 0) + x
    return {"customers": int(len(_distinct(cust))), "receivables": tbl.num_rows, "arrears_fen": int(a.sum()),
            "late_fee_fen": int(f.sum()), "prepaid_customers": int(len(_distinct(cust[np.array(pre, bool)])))
            if len(pre) else 0, "by_aging_fen": by}


def export(data: Data, period: str, out: str | os.PathLike[str] | None, fmt: str = "csv") -> pa.Table:
    """Finance export (财务接口): receivable, received and outstanding of ``period`` by category and area.

    ``receivable_fen``/``received_fen``: Σ debit / Σ credit of the entries counting in the period;
    ``outstanding_fen``: Σ debit − Σ credit of every entry up to the period's end (the balance carried).
    A customer's area is the area of its metering point (customers without one: area_id NULL).
    """
    _bills.period_bounds(period)
    if fmt not in ("csv", "parquet"):
        raise LedgerError(f"--format {fmt!r}: csv or parquet")
    with Reader(data) as r:
        e = TABLE if r.has else _EMPTY.replace("NULL::BIGINT AS balance_after_fen",
                                               "NULL::BIGINT AS balance_after_fen, NULL::VARCHAR AS period")
        tbl = r.query(f"""
            WITH area AS (SELECT customer_id, min(area_id) AS area_id FROM points WHERE role = 'customer'
                          GROUP BY customer_id)
            SELECT $p AS period, c.category, a.area_id,
                   count(DISTINCT c.customer_id) AS customers,
                   coalesce(sum(e.debit_fen) FILTER (WHERE e.period = $p), 0)::BIGINT AS receivable_fen,
                   coalesce(sum(e.credit_fen) FILTER (WHERE e.period = $p), 0)::BIGINT AS received_fen,
                   coalesce(sum(e.debit_fen - e.credit_fen) FILTER (WHERE e.period <= $p), 0)::BIGINT AS outstanding_fen
            FROM customers c LEFT JOIN area a USING (customer_id) LEFT JOIN {e} e USING (customer_id)
            GROUP BY ALL ORDER BY c.category, a.area_id NULLS LAST""", {"p": period})
    from gridhead.storage.sql import write_result
    write_result(tbl, fmt, out)
    return tbl


def receipt(data: Data, customer_no: str, receipt_no: str | None = None) -> dict[str, Any]:
    """A payment's receipt (收据): the payment (the customer's latest, or ``receipt_no``), who took it, the
    receivables it settled (from the stored allocations) and the customer's balance after it."""
    with Reader(data) as r:
        c = r.columns("SELECT customer_id, customer_no, name FROM customers WHERE customer_no = $n", {"n": customer_no})
        if not len(c["customer_id"]):
            raise LedgerError(f"customer {customer_no!r}: no such 户号 in the archive")
        cid = int(c["customer_id"][0])
        got = r.query(f"""SELECT * FROM (
                            SELECT entry_id, coalesce(receipt_no, {RECEIPT_NO}) AS receipt_no, credit_fen, value_date,
                                   who, ts_utc, key, note, balance_after_fen
                            FROM {TABLE} WHERE customer_id = $c AND kind = 'payment')
                          WHERE ($r IS NULL OR receipt_no = $r) ORDER BY entry_id DESC LIMIT 1""",
                      {"c": cid, "r": receipt_no}).to_pylist() if r.has else []
        if not got:
            raise LedgerError(f"customer {customer_no}: no payment" + (f" with receipt {receipt_no}" if receipt_no else ""))
        pay = got[0]
        settled = r.query(f"""SELECT e.kind, e.period, e.entry_id, a.amount_fen FROM {ALLOC} a
                              JOIN {TABLE} e ON e.entry_id = a.debit_entry_id WHERE a.credit_entry_id = $p
                              ORDER BY a.debit_entry_id""", {"p": pay["entry_id"]}).to_pylist() if r.has_alloc else []
        refunded = _one(r.con.execute(f"SELECT coalesce(-sum(credit_fen), 0) FROM {TABLE} WHERE kind = 'refund' "
                                      f"AND ref_entry_id = $p", {"p": pay["entry_id"]}))
    ref = pay["key"].split(":", 1)[1] if pay["key"] else None
    return {"receipt_no": pay["receipt_no"], "customer_no": customer_no, "name": c["name"][0],
            "amount_fen": int(pay["credit_fen"]), "paid_on": pay["value_date"], "taken_by": pay["who"],
            "posted_utc": pay["ts_utc"], "reference": ref, "note": pay["note"], "settled": settled,
            "refunded_fen": int(refunded), "balance_after_fen": int(pay["balance_after_fen"])}


def render_receipt(r: dict[str, Any]) -> str:
    lines = [f"收据 receipt {r['receipt_no']}",
             f"  customer   {r['customer_no']}  {r['name']}",
             f"  amount     {_yuan(r['amount_fen'])} yuan, paid {r['paid_on']}, taken by {r['taken_by']}"
             + (f", reference {r['reference']}" if r["reference"] else "")]
    for s in r["settled"]:
        lines.append(f"  settles    {s['kind']} {s['period']} (entry {s['entry_id']}): {_yuan(s['amount_fen'])} yuan")
    if r["refunded_fen"]:
        lines.append(f"  refunded   {_yuan(r['refunded_fen'])} yuan")
    bal = r["balance_after_fen"]
    lines.append(f"  balance    {_yuan(abs(bal))} yuan {'owed' if bal > 0 else 'in credit'} after this payment")
    return "\n".join(lines)
