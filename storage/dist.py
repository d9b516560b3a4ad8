"""The bill run on Dask distributed (issue 10): one task per lake bucket, published like the single-node run.

Partitioning — which task bills a customer
    A customer's *home meter* is the first meter of its metering point (计量点) in the period (the
    ``point_meters`` row valid on the period's first day, else the first installed in it; ties by meter id);
    the customer belongs to the task of ``schema.bucket_of(home meter)`` — the bucket the lake's
    partitions of that meter sit in.  A customer without a meter in the period goes to
    ``bucket_of(customer_id)``.  The assignment is a pure function of the archive and the period, computed
    once by the driver (:func:`assign`), so every customer is billed by exactly one task.

    A meter replacement (换表) may put the new meter in another bucket: the task reads the buckets of *all*
    its customers' meters (its own, plus the few foreign buckets of replaced meters, from which it keeps only
    its meters' rows), so a bill never loses a segment.  Annual-tier cumulative (阶梯年累计) and the jump
    history come from the earlier bills by customer id, not from the lake, so a customer whose home bucket
    changes between periods (its meter was replaced) still gets its own history.

Each task runs :func:`storage.bills.extract` restricted to its customers and
:func:`billing_core.run.compute` — the same DuckDB / numpy / Cython code as the single-node run — and
returns columns.  The driver merges them in customer order and publishes through
:func:`storage.bills.publish_run`: the same files, the same bytes, the same atomic swap and lock.  Nothing is
published unless every task succeeded; tasks only read, so Dask may re-run one whose worker died.
"""

from __future__ import annotations

import contextlib
import time
import types

import duckdb
import numpy as np
import pyarrow as pa

from billing_core import run as R
from billing_core.tariff import TariffSet
from protocols.errors import BillingError, GridheadError, StorageError

from . import bills, lake, schema
from .sql import archive_path

TASK_RETRIES = 2        # a task whose worker died is re-run (reads only: re-running is harmless)


def assign(data, period: str, n_buckets: int = schema.N_BUCKETS) -> dict[int, np.ndarray]:
    """bucket → the sorted customer ids its task bills (see the module docstring for the rule)."""
    start, end = bills.period_bounds(period)
    arch = archive_path(data)
    if not arch.exists():
        raise StorageError(f"{arch}: no archive (run `gridhead archive import` first)")
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"ATTACH '{bills._q(arch.resolve())}' AS a (READ_ONLY)")
        t = con.execute("""
            WITH pt AS (SELECT customer_id, point_id, row_number() OVER (PARTITION BY customer_id ORDER BY point_id) AS k
                        FROM a.points WHERE role = 'customer'),
                 hm AS (SELECT pt.customer_id, pm.meter_id, row_number() OVER (
                               PARTITION BY pt.customer_id ORDER BY pm.valid_from, pm.meter_id) AS j
                        FROM pt JOIN a.point_meters pm ON pm.point_id = pt.point_id AND pt.k = 1
                        WHERE pm.valid_from < $e AND (pm.valid_to IS NULL OR pm.valid_to > $s))
            SELECT c.customer_id, coalesce(hm.meter_id, -1) AS meter_id
            FROM a.customers c LEFT JOIN hm ON hm.customer_id = c.customer_id AND hm.j = 1
            ORDER BY c.customer_id""", {"s": start, "e": end}).fetchnumpy()
    except duckdb.Error as exc:
        raise StorageError(f"bill run {period}: reading {arch}: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
    cid = np.asarray(t["customer_id"], np.int64)
    meter = np.asarray(t["meter_id"], np.int64)
    home = np.where(meter >= 0, meter, cid)
    b = lake.buckets_of(home, n_buckets)
    return {int(k): cid[b == k] for k in np.unique(b)}


def bill_task(data, period: str, bucket: int, customers: np.ndarray, tariffs: TariffSet, kernel=None) -> dict:
    """One task: the bills of ``customers`` (one bucket's) as columns — run on a Dask worker."""
    t0 = time.perf_counter()
    inp, text = bills.extract(data, period, tariffs, customers=customers)
    missing = sorted(set(inp.categories) - set(tariffs.tariffs))
    if missing:
        raise BillingError(f"category {missing[0]!r}: no tariff file; nothing was billed")
    t_read = time.perf_counter() - t0
    out, items, table = R.compute(inp, tariffs, kernel)
    R.check_items(out, items)
    return {"bucket": bucket, "out": out, "items": items, "text": text, "keys": table.keys, "table": table,
            "read_s": t_read, "price_s": time.perf_counter() - t0 - t_read}


def merge(parts: list[dict]) -> tuple[dict, dict, pa.Table]:
    """Tasks' columns → the single-node run's columns: bills in customer order, items bill after bill."""
    n = [p["text"].num_rows for p in parts]
    text = pa.concat_tables([p["text"] for p in parts]).combine_chunks()
    cid = text.column("customer_id").to_numpy()
    order = np.argsort(cid, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    out = {}
    for k in parts[0]["out"]:
        cols = [np.asarray(p["out"][k]) for p in parts]
        if all(c.ndim == 1 and len(c) == m for c, m in zip(cols, n)):
            out[k] = np.concatenate(cols)[order]
        else:
            raise StorageError(f"distributed bill run: column {k!r} is not per bill; cannot merge")
    offs = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)
    new_bill = np.concatenate([rank[p["items"]["bill"].astype(np.int64) + o] for p, o in zip(parts, offs)])
    iorder = np.argsort(new_bill, kind="stable")     # bill after bill; each bill's items keep their order
    items = {}
    for k in parts[0]["items"]:
        items[k] = np.concatenate([np.asarray(p["items"][k]) for p in parts])[iorder]
    items["bill"] = new_bill[iorder].astype(parts[0]["items"]["bill"].dtype)
    return out, items, text.take(pa.array(order))


def run(data, period: str, client, tariffs_dir=None, progress=None, kernel=None,
        n_buckets: int = schema.N_BUCKETS) -> dict:
    """The bill run of ``period`` on the Dask ``client``: one task per bucket; same result as
    :func:`storage.bills.run` (same files, byte for byte).  ``progress(step)`` gets "read" (per task
    done, as ``"task NN"``), "price", "write", "publish".  A failed task (bad input, or a worker lost more
    often than Dask allows) raises a one-line GridheadError and publishes nothing."""
    tick = progress or (lambda _s: None)
    t0 = time.perf_counter()
    start, end = bills.period_bounds(period)
    tariffs = TariffSet.load(tariffs_dir)
    tariffs.table()
    plan = assign(data, period, n_buckets)
    futs = [client.submit(bill_task, str(data), period, b, ids, tariffs, kernel, key=f"bill-{period}-{b:02d}",
                          retries=TASK_RETRIES, pure=False) for b, ids in sorted(plan.items())]
    parts = []
    try:
        from distributed import as_completed     # imported here: the single-node path needs no Dask
        for fut in as_completed(futs):
            parts.append(fut.result())
            tick(f"task {parts[-1]['bucket']:02d}")
    except GridheadError:
        raise
    except Exception as exc:                       # KilledWorker, lost scheduler, …: one line, nothing published
        raise StorageError(f"bill run {period}: distributed task failed ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}); nothing was published") from None
    finally:
        for f in futs:
            f.release()
    parts.sort(key=lambda p: p["bucket"])
    if any(p["keys"] != parts[0]["keys"] for p in parts):
        raise StorageError(f"bill run {period}: tasks priced with different tariff tables; nothing was published")
    t_read = time.perf_counter() - t0
    tick("read")
    out, items, text = merge(parts)
    R.check_items(out, items)
    t_price = time.perf_counter() - t0 - t_read
    tick("price")
    span = types.SimpleNamespace(start=start, end=end)
    s = bills.publish_run(data, period, span, text, out, items, parts[0]["table"], t0, t_read, t_price, tick)
    s["tasks"] = {"count": len(parts), "read_s": round(sum(p["read_s"] for p in parts), 3),
                  "price_s": round(sum(p["price_s"] for p in parts), 3)}
    return s


@contextlib.contextmanager
def client(scheduler: str | None = None, workers: int | None = None, threads: int = 1):
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
