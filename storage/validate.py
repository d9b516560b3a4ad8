"""Checks a head-end batch passes before it is acknowledged; what fails goes to quarantine with its reason.

A rejected row is never dropped and never written as a reading: the ingest writer logs it in the WAL and
publishes it to the ``quarantine`` table (``storage.lake.QUARANTINE_SCHEMA``) with the first reason that
applies, in this order:

=========================  ==================================================================================
reason                     when
=========================  ==================================================================================
``unknown meter``          the meter id is not in the archive's known set (or outside [0, MAX_METER_ID])
``unknown register``       the register code is not in ``schema.REGISTERS`` (events: code not in EVENTS)
``value out of range``     value outside [min_value, max_value] of its register (register digits, sign)
``timestamp in the future``  ts (event start) later than the receive clock + tolerance (a meter clock
                           running fast, or garbage time fields)
``bad quality or source``  quality has bits outside the known flags, or source is not a SOURCES code
``end before start``       an event that ends before it starts
=========================  ==================================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias, cast

import numpy as np
import numpy.typing as npt

from gridhead.protocols.errors import StorageError

from . import schema

UNKNOWN_METER = "unknown meter"
UNKNOWN_REGISTER = "unknown register"
OUT_OF_RANGE = "value out of range"
FUTURE = "timestamp in the future"
BAD_CODES = "bad quality or source"
END_BEFORE_START = "end before start"

DEFAULT_FUTURE_TOLERANCE_S = 300     # a meter clock may run fast by minutes before 对时 corrects it

_N_CODES = schema.MAX_REGISTER_CODE + 1
_KNOWN_REG = np.zeros(_N_CODES, bool)
_MIN = np.zeros(_N_CODES, np.int64)
_MAX = np.full(_N_CODES, -1, np.int64)
for _c, _r in schema.REGISTERS.items():
    _KNOWN_REG[_c], _MIN[_c], _MAX[_c] = True, _r.min_value, _r.max_value
_KNOWN_EVENT = np.zeros(_N_CODES, bool)
_KNOWN_EVENT[list(schema.EVENTS)] = True
_QUALITY_BITS = schema.Q_BACKFILLED | schema.Q_ESTIMATED | schema.Q_SUSPECT
_KNOWN_SOURCE = np.zeros(256, bool)
_KNOWN_SOURCE[list(schema.SOURCES)] = True


# what ``KnownMeters.of`` accepts: meter ids (array-like), a KnownMeters, or a callable ``ids -> bool mask``
Known: TypeAlias = "Callable[[np.ndarray], np.ndarray] | npt.ArrayLike"


class KnownMeters:
    """The archive's set of meter ids, answering ``known(ids) -> bool mask`` for a whole column.

    Dense ids (the archive's usual 1..N) are looked up in a bitmap — one gather per row; sparse ids by
    binary search in the sorted set.  ``KnownMeters.of`` also accepts a callable (e.g. a live archive
    query) returning the mask itself.
    """

    def __init__(self, ids: npt.ArrayLike) -> None:
        ids = np.unique(np.asarray(ids, np.int64))
        ids = ids[(ids >= 0) & (ids <= schema.MAX_METER_ID)]
        self.count = len(ids)
        top = int(ids[-1]) + 1 if len(ids) else 0
        self._bitmap: np.ndarray | None
        self._sorted: np.ndarray | None
        if top <= 8 * len(ids) + (1 << 20):
            self._bitmap = np.zeros(top, bool)
            self._bitmap[ids] = True
            self._sorted = None
        else:
            self._bitmap = None
            self._sorted = ids

    @classmethod
    def of(cls, known: Known) -> Callable[[np.ndarray], np.ndarray]:
        if isinstance(known, cls) or callable(known):
            return known
        return cls(known)

    def __call__(self, meter_ids: np.ndarray) -> np.ndarray:
        m = np.asarray(meter_ids, np.int64)
        if self._bitmap is not None:
            inside = (m >= 0) & (m < len(self._bitmap))
            out = np.zeros(len(m), bool)
            out[inside] = self._bitmap[m[inside]]
            return out
        srt = cast(np.ndarray, self._sorted)     # __init__ sets exactly one of _bitmap and _sorted
        pos = np.searchsorted(srt, m)
        pos[pos == len(srt)] = 0
        return (srt[pos] == m) if len(srt) else np.zeros(len(m), bool)


def _first_reason(checks: list[tuple[str, np.ndarray]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(ok mask, reason index per row: -1 if ok) from (reason, bad mask) in priority order."""
    reason = np.full(n, -1, np.int8)
    for i, (_, bad) in reversed(list(enumerate(checks))):
        reason[bad] = i
    return reason < 0, reason


def _known_mask(known: Callable[[np.ndarray], npt.ArrayLike], meter: np.ndarray) -> np.ndarray:
    mask = np.asarray(known(meter), bool)
    if mask.shape != meter.shape:
        raise StorageError(f"ingest: known-meters check returned shape {mask.shape} for {meter.shape} ids")
    return mask & (meter >= 0) & (meter <= schema.MAX_METER_ID)


def check_readings(meter: np.ndarray, register: npt.ArrayLike, ts_s: np.ndarray, value: np.ndarray,
                   quality: np.ndarray, source: np.ndarray, *, known: Callable[[np.ndarray], npt.ArrayLike], now_s: int,
                   tolerance_s: int = DEFAULT_FUTURE_TOLERANCE_S) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Validate reading columns.  Returns (ok mask, reason texts, reason index per row or -1)."""
    reg = np.asarray(register).astype(np.int64)
    in_codes = (reg >= 0) & (reg < _N_CODES)
    safe = np.where(in_codes, reg, 0)
    known_reg = in_codes & _KNOWN_REG[safe]
    checks = [
        (UNKNOWN_METER, ~_known_mask(known, meter)),
        (UNKNOWN_REGISTER, ~known_reg),
        (OUT_OF_RANGE, (value < _MIN[safe]) | (value > _MAX[safe])),
        (FUTURE, ts_s > now_s + tolerance_s),
        (BAD_CODES, ((quality.astype(np.int64) & ~_QUALITY_BITS) != 0) | ~_KNOWN_SOURCE[source]),
    ]
    ok, idx = _first_reason(checks, len(reg))
    return ok, [c[0] for c in checks], idx


def check_events(meter: np.ndarray, event: npt.ArrayLike, start_s: np.ndarray, end_s: np.ndarray,
                 source: np.ndarray, *, known: Callable[[np.ndarray], npt.ArrayLike], now_s: int,
                 tolerance_s: int = DEFAULT_FUTURE_TOLERANCE_S) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Validate event columns (``end_s`` uses -1 << 62 for an open event).  Same returns as check_readings."""
    ev = np.asarray(event).astype(np.int64)
    in_codes = (ev >= 0) & (ev < _N_CODES)
    checks = [
        (UNKNOWN_METER, ~_known_mask(known, meter)),
        (UNKNOWN_REGISTER, ~(in_codes & _KNOWN_EVENT[np.where(in_codes, ev, 0)])),
        (FUTURE, start_s > now_s + tolerance_s),
        (BAD_CODES, ~_KNOWN_SOURCE[source]),
        (END_BEFORE_START, (end_s != OPEN_END) & (end_s < start_s)),
    ]
    ok, idx = _first_reason(checks, len(ev))
    return ok, [c[0] for c in checks], idx


OPEN_END = -(1 << 62)
