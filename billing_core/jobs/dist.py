"""The bill run on Dask distributed: one task per lake bucket, published like the single-node run.

Partitioning — which task bills a customer
    A customer's *home meter* is the first meter of its metering point (计量点) in the period (the
    ``point_meters`` row valid on the period's first day, else the first installed in it; ties by meter id);
    the customer belongs to the task of ``schema.bucket_of(home meter)`` — the bucket the lake's
    partitions of that meter sit in.  A customer without a meter in the period goes to
    ``bucket_of(customer_id)``.  The assignment is a pure function of the archive and the period, computed
    once by the driver (:func:`assign`), so every customer is billed by exactly one task.

    A meter replacement (换表) may put the new meter in another bucket: the driver reads, in one pass for
    all tasks, the monthly readings of every task's meters outside its bucket and ships them with the
    task's archive rows (billing_core.jobs.bills.prepare); the task reads its own bucket's monthly partitions and,
    per day, the daily partitions holding a reading it needs — so a bill never loses a segment and no task
    scans every bucket.  Annual-tier cumulative (阶梯年累计) and the jump
    history come from the earlier bills by customer id, not from the lake, so a customer whose home bucket
    changes between periods (its meter was replaced) still gets its own history.

Each task runs :func:`billing_core.jobs.bills.extract` restricted to its customers and
:func:`billing_core.run.compute` — the same DuckDB / numpy / Cython code as the single-node run — and
returns columns.  The driver spills each task's columns to disk as they arrive (billing_core.jobs.bills.Parts) and
publishes through :func:`billing_core.jobs.bills.publish_run`, which merges them in customer order a row group at a
time: the same files, the same bytes, the same atomic swap and lock as the single-node run, with the
driver's memory bounded by one task's columns and one row group, not by the number of customers.  Nothing is
published unless every task succeeded; tasks only read, so Dask may re-run one whose worker died.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import time
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np

from gridhead.billing_core import run as R
from gridhead.billing_core import lineloss as ll
from gridhead.billing_core.tariff import TariffSet
from gridhead.protocols.errors import BillingError, GridheadError, StorageError
from gridhead.storage import lake, lakefs, schema
from gridhead.storage.paths import Data, archive_path, data_dir, lake_root
from gridhead.storage.results import bills_root

from . import bills
from .bills import Tick, assign

if TYPE_CHECKING:
    from distributed import Client, Future

    from .lineloss import Result, Select

TASK_RETRIES = 2        # a task whose worker died is re-run (reads only: re-running is harmless)
# a task's archive rows arrive unpickled, their buffers not 64-byte aligned; DuckDB's Arrow scan (Acero) then
# warns on stderr once per table: copy them aligned instead (small tables).  Read by Arrow at its first use
# in the worker process, which imports this module before running a task.
os.environ.setdefault("ACERO_ALIGNMENT_HANDLING", "reallocate")


def bill_task(data: Data, period: str, bucket: int, customers: np.ndarray, tariffs: TariffSet,
              kernel: ModuleType | None = None, prepared: dict[str, Any] | None = None, lake_uri: str | None = None,
              spill: str | None = None) -> dict[str, Any]:
    """One task: the bills of ``customers`` (one bucket's) as columns — run on a Dask worker.  ``prepared``:
    its share of :func:`billing_core.jobs.bills.prepare` (its archive rows joined, the monthly readings of its meters
    outside its bucket); without it the task queries the archive file itself and reads every bucket its
    meters are in.  ``lake_uri``: the driver's lake URI (storage.lakefs), so a worker need not have it in
    its environment.  ``spill``: the driver's spill directory (billing_core.jobs.bills.Parts); where this worker sees
    it (a shared data directory, as for the earlier bills) the columns are written there and only the file
    names travel back, else they are returned."""
    t0 = time.perf_counter()
    inp, text = bills.extract(data, period, tariffs, customers=customers, prepared=prepared, lake_uri=lake_uri)
    missing = sorted(set(inp.categories) - set(tariffs.tariffs))
    if missing:
        raise BillingError(f"category {missing[0]!r}: no tariff file; nothing was billed")
    t_read = time.perf_counter() - t0
    out, items, table = R.compute(inp, tariffs, kernel)
    R.check_items(out, items)
    res: dict[str, Any] = {"bucket": bucket, "keys": table.keys, "table": table, "read_s": t_read,
           "price_s": time.perf_counter() - t0 - t_read, "seen": bills.readings_seen(inp)}
    if spill and os.path.isdir(spill) and os.access(spill, os.W_OK):
        res["files"] = tuple(bills.write_ipc(spill, t) for t in bills.part_tables(text, out, items))
    else:
        res.update(out=out, items=items, text=text)
    return res


def gather(futs: list[Future[Any]], what: str, nothing: str, done: Callable[[Any], object] | None = None,
           keep: bool = True) -> list[Any]:
    """The results of ``futs`` in completion order (``done(result)`` after each; ``keep=False``: not kept,
    so ``done`` must take what it needs); each is released on its worker as soon as it is here.  A failed
    task — bad input, or a worker lost more often than Dask allows — raises one line ending in ``nothing``."""
    parts: list[Any] = []
    try:
        from distributed import as_completed     # imported here: the single-node path needs no Dask
        for fut in as_completed(futs):
            result = fut.result()
            fut.release()
            if keep:
                parts.append(result)
            if done:
                done(result)
            del result
    except GridheadError:
        raise
    except Exception as exc:                       # KilledWorker, lost scheduler, …: one line
        raise StorageError(f"{what}: distributed task failed ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}); {nothing}") from None
    finally:
        for f in futs:
            f.release()
    return parts


def run(data: Data, period: str, client: Client, tariffs_dir: str | os.PathLike[str] | None = None,
        progress: Tick | None = None, kernel: ModuleType | None = None,
        n_buckets: int = schema.N_BUCKETS, ship_rows: bool = True) -> dict[str, Any]:
    """The bill run of ``period`` on the Dask ``client``: one task per bucket; same result as
    :func:`billing_core.jobs.bills.run` (same files, byte for byte).  ``progress(step)`` gets "read" (per task
    done, as ``"task NN"``), "price", "write", "publish".  A failed task (bad input, or a worker lost more
    often than Dask allows) raises a one-line GridheadError and publishes nothing.  ``ship_rows``: the
    driver reads the archive once and sends each task its share (:func:`billing_core.jobs.bills.prepare`); else
    every task queries the whole archive file and reads every bucket of its meters (the design before,
    kept to measure what shipping saves)."""
    tick = progress or (lambda _s: None)
    t0 = time.perf_counter()
    data = data_dir(data).resolve()         # the tasks get an absolute path: a worker's directory may differ
    start, end = bills.period_bounds(period)
    tariffs = TariffSet.load(tariffs_dir)
    tariffs.table()
    plan = assign(data, period, n_buckets)
    prepared = bills.prepare(data, period, {b: ({b}, ids) for b, ids in plan.items()}, lakefs.uri(), tariffs) \
        if ship_rows else {}
    t_prepare = time.perf_counter() - t0
    parts = bills.Parts(bills_root(data), spill=True)
    got: list[dict[str, Any]] = []

    def done(part: dict[str, Any]) -> None:       # written by the task into the spill directory, or spilled as it arrives here
        if got and part["keys"] != got[0]["keys"]:
            raise StorageError(f"bill run {period}: tasks priced with different tariff tables; "
                               f"nothing was published")
        if "files" in part:
            parts.adopt(*part["files"])
        else:
            parts.add(part["text"], part["out"], part["items"])
        got.append({k: part[k] for k in ("bucket", "keys", "table", "read_s", "price_s", "seen")})
        tick(f"task {part['bucket']:02d}")

    try:
        spill = str(parts.spill_dir().resolve())
        futs = [client.submit(bill_task, str(data), period, b, ids, tariffs, kernel,
                              client.scatter([prepared.pop(b)], hash=False)[0] if ship_rows else None,  # one object
                              lakefs.uri(), spill, key=f"bill-{period}-{b:02d}", retries=TASK_RETRIES, pure=False)
                for b, ids in sorted(plan.items())]
        gather(futs, f"bill run {period}", "nothing was published", done, keep=False)
        bills.refuse_unread_period(period, sum((p["seen"] for p in got), np.zeros(3, np.int64)))
        t_read = time.perf_counter() - t0
        tick("read")
        tick("price")
        s = bills.publish_run(data, period, (start, end), parts, got[0]["table"] if got else None, t0,
                               t_read, 0.0, tick)
    finally:
        parts.close()
    s["seconds"]["prepare"] = round(t_prepare, 3)      # of "read": the driver's assignment and prepare
    s["tasks"] = {"count": len(got), "read_s": round(sum(p["read_s"] for p in got), 3),
                  "price_s": round(sum(p["price_s"] for p in got), 3)}
    return s


# --- line loss: one task per feeder set (a feeder with its areas) ---------------------------------------
def feeder_sets(data: Data, n_sets: int) -> list[np.ndarray]:
    """The archive's feeder ids in ``n_sets`` contiguous sets (areas without a feeder, key -1, in the first).

    A feeder's balance sums its areas' check meters and its dedicated-transformer customers, and an area's
    its own points: a task that owns whole feeders with their areas needs no second stage."""
    from gridhead.storage.archive import Archive
    with Archive(archive_path(data), read_only=True) as a:
        ids = a.columns("SELECT feeder_id FROM feeders ORDER BY feeder_id")["feeder_id"].astype(np.int64)
    sets = [k for k in np.array_split(ids, max(1, min(n_sets, len(ids)))) if len(k)] or [ids]
    sets[0] = np.r_[np.int64(-1), sets[0]]
    return sets


def _own_feeders(keys: np.ndarray) -> Select:
    """lineloss.compute's ``select``: the feeders in ``keys``, their areas, the points of those (an area's
    points by its area, a point outside areas by its feeder)."""
    def select(seg: dict[str, np.ndarray], areas: dict[str, np.ndarray], feeders: np.ndarray
               ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
        a_keep = np.isin(areas["feeder_id"].astype(np.int64), keys)
        s_area = seg["area_id"].astype(np.int64)
        keep = np.where(s_area >= 0, np.isin(s_area, areas["area_id"][a_keep].astype(np.int64)),
                        np.isin(seg["feeder_id"].astype(np.int64), keys))
        return ({k: v[keep] for k, v in seg.items()}, {k: v[a_keep] for k, v in areas.items()},
                feeders[np.isin(feeders.astype(np.int64), keys)])
    return select


def lineloss_task(data: Data, first: dt.date, last: dt.date, keys: np.ndarray, thresholds: ll.LossThresholds,
                  max_gap: int, lake_uri: str | None = None, share: dict[str, Any] | None = None,
                  ) -> tuple[np.ndarray, Result, float]:
    """One task: (keys, the areas' and feeders' part of lineloss.Result, CPU seconds) of one feeder set.
    ``share``: its archive inputs and frozen readings, made by the driver (:func:`_lineloss_shares`); else
    the task queries the archive and reads the lake itself."""
    from . import lineloss
    from gridhead.storage.archive import Archive
    t0 = time.process_time()
    if share is not None:
        r = lineloss.compute(None, lake_uri or lake_root(data), first, last, thresholds=thresholds,
                             max_gap=max_gap, inputs=share["inputs"], frozen=share["frozen"])
    else:
        with Archive(archive_path(data), read_only=True) as a:
            r = lineloss.compute(a, lake_uri or lake_root(data), first, last, thresholds=thresholds,
                                 max_gap=max_gap, select=_own_feeders(keys))
    units = lineloss.Result(r.days, r.area_id, r.area_type, r.area_feeder, r.area, r.feeder_id, r.feeder,
                            r.thresholds, period=r.period, missing=r.missing)
    return keys, units, time.process_time() - t0


def _cat_balance(parts: Sequence[ll.Balance], order: np.ndarray) -> ll.Balance:
    return type(parts[0])(**{f.name: np.concatenate([getattr(b, f.name) for b in parts])[order]
                             for f in dataclasses.fields(parts[0])})


def merge_lineloss(parts: list[Result]) -> Result:
    """Tasks' units → the single-node Result's area and feeder rows (areas by id, feeders by id)."""
    from . import lineloss

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    ao = np.argsort(cat("area_id"), kind="stable")
    fo = np.argsort(cat("feeder_id"), kind="stable")
    p0 = parts[0]
    # the 不可算 meters of every task, in the single node's order (day, area, meter, missing freeze)
    miss = None
    missing = [p.missing for p in parts if p.missing is not None]
    if len(missing) == len(parts):
        miss = {k: np.concatenate([m[k] for m in missing]) for k in missing[0]}
        o = np.lexsort((miss["reading_date"], miss["meter_id"], miss["area_id"], miss["date"]))
        miss = {k: v[o] for k, v in miss.items()}
    return lineloss.Result(
        p0.days, cat("area_id")[ao], cat("area_type")[ao], cat("area_feeder")[ao],
        _cat_balance([p.area for p in parts], ao), cat("feeder_id")[fo], _cat_balance([p.feeder for p in parts], fo),
        p0.thresholds, period=(_cat_balance([p.month()[0] for p in parts], ao),
                               _cat_balance([p.month()[1] for p in parts], fo)), missing=miss)


def _lineloss_shares(data: Data, first: dt.date, last: dt.date, max_gap: int, sets: list[np.ndarray]
                     ) -> list[dict[str, Any]]:
    """Per feeder set, what its task computes from: its rows of the archive inputs (segments, areas,
    feeders, multiplier rows) and the frozen readings of its segments — the archive queried and the lake
    read once for all sets, instead of once per task (a feeder's meters are spread over every bucket)."""
    from . import lineloss
    from gridhead.storage.archive import Archive
    with Archive(archive_path(data), read_only=True) as a:
        inp = lineloss.archive_inputs(a, first, last)
    seg = inp["seg"]
    R = lineloss.read_frozen(lakefs.uri() or lake_root(data), lineloss.window(first, last, max_gap),
                             seg["meter_id"], lineloss.registers_for(seg))
    seg = {**seg, "_row": np.arange(len(seg["meter_id"]))}
    out = []
    for keys in sets:
        s, areas, feeders = _own_feeders(keys)(seg, inp["areas"], inp["feeders"])
        rows = s.pop("_row")
        pts = np.unique(s["point_id"].astype(np.int64))
        sub = {name: {k: v[np.isin(t["point_id"].astype(np.int64), pts)] for k, v in t.items()}
               for name, t in (("mu", inp["mu"]), ("mrows", inp["mrows"]))}
        out.append({"inputs": {"seg": s, "areas": areas, "feeders": feeders, **sub},
                    "frozen": {name: np.ascontiguousarray(v[rows]) for name, v in R.items()}})
    return out


def lineloss_run(data: Data, first: dt.date, last: dt.date, client: Client, *,
                 thresholds: ll.LossThresholds | None = None, max_gap: int = 3, n_sets: int | None = None,
                 save: bool = True, progress: Tick | None = None, ship_inputs: bool = True,
                 ) -> tuple[Result, dict[str, float]]:
    """Line loss of ``first`` .. ``last`` on the Dask ``client``, one task per feeder set; the merged
    Result has the single-node run's area and feeder rows (not its per-point audit columns), and with
    ``save`` the same ``line_loss`` partitions are written — only after every task succeeded.
    ``ship_inputs``: the driver queries the archive and reads the lake once and ships each task its share
    (else every task queries the archive and reads whole days of every bucket itself).  Returns (Result, {"count": tasks, "cpu_s": their summed CPU
    time})."""
    from . import lineloss
    tick = progress or (lambda _s: None)
    th = thresholds or lineloss.load_thresholds()
    # default: one set per worker.  A feeder's meters are spread over every bucket, so the driver queries the
    # archive and reads the window's frozen readings once for all sets and ships each task its share.
    sets = feeder_sets(data, n_sets or max(1, len(client.scheduler_info()["workers"])))
    shares = _lineloss_shares(data, first, last, max_gap, sets) if ship_inputs else [None] * len(sets)
    futs = [client.submit(lineloss_task, str(data), first, last, k, th, max_gap, lakefs.uri(),
                          client.scatter([shares[i]], hash=False)[0] if ship_inputs else None, pure=False,
                          key=f"lineloss-{first}-{last}-{i:02d}", retries=TASK_RETRIES) for i, k in enumerate(sets)]
    del shares
    parts = gather(futs, f"line loss {first}..{last}", "nothing was written",
                   lambda part: tick(f"task {int(part[0][-1])}"))
    res = merge_lineloss([p[1] for p in sorted(parts, key=lambda p: int(p[0][0]))])
    if save:
        lineloss.write_days(lake_root(data), res)
    tick("write")
    return res, {"count": len(parts), "cpu_s": round(sum(p[2] for p in parts), 3)}


@contextlib.contextmanager
def client(scheduler: str | None = None, workers: int | None = None, threads: int = 1) -> Iterator[Client]:
    """A Dask client: to ``scheduler`` (``tcp://HOST:PORT``), else a LocalCluster of ``workers`` worker
    processes on 127.0.0.1 (closed on exit)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise StorageError("distributed run: the dask[distributed] package is not installed") from None
    if scheduler:
        try:
            c = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise StorageError(f"scheduler {scheduler}: cannot connect ({exc})") from None
        try:
            yield c
        finally:
            c.close()
        return
    cluster = LocalCluster(n_workers=workers or 2, threads_per_worker=threads, processes=True, host="127.0.0.1",
                           dashboard_address=None, scheduler_kwargs={"dashboard": False})
    c = Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()
