"""Pure-Python twin of ``headend._records698`` (ext/_records698.pyx): record answers → lake columns.

``decode(buf, plans, meter_of, ctx)`` takes the bytes of one APDU — GET-Response-Record (85 03),
REPORT-Notification-RecordList (88 02) or PROXY-Response-GetRecord (89 02) — and returns
``(service tag, PIID-ACD, TSA or None, results)``, each result ``(record OAD, RCSD bytes, DAR or None,
columns or None, missing, meters)``: the columns, missing rows and meters of :func:`records.rows_to_batch`
for its rows.  It returns None — the caller then takes the general path — for any other service, an RCSD
not in ``plans`` (RCSD bytes → the plan of records._fast_spec), a FollowReport or TimeTag, or bytes
that do not decode.  ``meter_of``: a dict TSA bytes → meter id, or a callable (None = unknown);
``ctx``: (reason unknown TSA, reason no time, reason no data, local offset s, default ts or None,
source, quality, received_utc or None).

The twin is the general path itself (``decode_apdu`` then ``rows_to_batch``), so the compiled kernel is
checked against exactly what the head-end would otherwise store.  ``headend.records`` hands it its
``rows_to_batch`` (:func:`bind`) as it is imported, so this module imports no records module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gridhead.protocols.dlt698 import apdu as A
from gridhead.protocols.dlt698.axdr import encode_typed
from gridhead.protocols.errors import GridheadError

_rows_to_batch: Callable[..., Any] | None = None


def bind(rows_to_batch: Callable[..., Any]) -> None:
    """Take the general path's rows → columns (``headend.records.rows_to_batch``)."""
    global _rows_to_batch
    _rows_to_batch = rows_to_batch


def decode(buf, plans: dict, meter_of, ctx: tuple):
    rows_to_batch = _rows_to_batch
    assert rows_to_batch is not None, "headend.records binds the twin as it is imported"
    _u, _t, _n, _off, default_ts, source, quality, received_utc = ctx
    try:
        apdu = A.decode_apdu(bytes(buf))
    except GridheadError:
        return None
    tsa = None
    if isinstance(apdu, A.ReportNotificationRecordList):
        tag, found = 0x88, apdu.results
    elif isinstance(apdu, A.GetResponseRecord):
        tag, found = 0x85, (apdu.result,)
    elif isinstance(apdu, A.ProxyGetResponseRecord):
        tag, found, tsa = 0x89, (apdu.result,), apdu.tsa
    else:
        return None
    if apdu.follow_report is not None or apdu.time_tag is not None:
        return None
    lookup = meter_of.get if isinstance(meter_of, dict) else meter_of
    out = []
    for res in found:
        key = encode_typed(96, res.rcsd)
        if key not in plans:
            return None
        if res.dar is not None:
            out.append((res.oad, key, res.dar, None, (), ()))
            continue
        try:
            b = rows_to_batch(res.rcsd, res.rows, lookup, source=source, quality=quality,
                              received_utc=received_utc, tsa=tsa, ts_utc=default_ts)
        except (ValueError, OverflowError, TypeError):
            return None
        out.append((res.oad, key, None, b.columns, b.missing, b.meters))
    return tag, apdu.piid_acd, tsa, out
