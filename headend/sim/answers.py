"""What a simulated concentrator answers: the requests of the collection profile (headend/profile.py),
computed from the register model (headend/sim/model.py).  No I/O: request APDU in, response APDU out.

Record columns follow the request's RCSD, whatever its order: ``202A0200`` the meter's TSA,
``6040/6041/6042 0200`` the collection start / success / store times (date_time_s), a ROAD
(``50040200`` with sub-OADs) an ``array`` of the sub-OADs' values, ``20210200`` the freeze time, the
energy OADs an ``array`` of double-long-unsigned with as many elements as ``profile.REGISTER_MAP``
maps (total + 4 tariffs for ``00100200``, total only for the others), ``10100200`` an array of
structure {double-long-unsigned, date_time_s}.  A meter without reactive registers answers ``null``
for ``00300200`` / ``00400200``; an object the simulator does not model answers ``null`` in a record
column and DAR 6 (object unavailable) in a GET.
"""

from __future__ import annotations

import datetime as _dt
import struct

import numpy as np

from gridhead.protocols.dlt645 import ErrorResponse as Err645
from gridhead.protocols.dlt645 import Framer as Framer645
from gridhead.protocols.dlt645 import ReadRequest, ReadResponse, decode_message
from gridhead.protocols.dlt698 import apdu as A
from gridhead.protocols.dlt698.control import OMD_CLOSE, OMD_PROTECT_OFF, OMD_PROTECT_ON, OMD_TRIP
from gridhead.protocols.dlt698.axdr import Data, DateTimeS, Road, encode_data, encode_length
from gridhead.protocols.errors import ProtocolError
from gridhead.storage import schema

from gridhead.headend import profile as P
from .model import ControlState, unit_hash

T_NULL, T_ARRAY, T_STRUCT, T_DLONG, T_DLU, T_LONG, T_LU, T_DTS, T_TSA = 0, 1, 2, 5, 6, 16, 18, 28, 85
DAR_UNAVAILABLE, DAR_UNDEFINED, DAR_TIMEOUT = 6, 4, 33
NULL = Data(T_NULL, None)
_REG_COL = {P.OAD_FWD_ACTIVE: (0, 1, 2, 3, 4), P.OAD_REV_ACTIVE: (5,), P.OAD_REACTIVE_1: (6,),
            P.OAD_REACTIVE_2: (7,)}
# 645: DI → register columns of the model (the 645 block carries total + tariffs)
_DI_COLS = {P.DI645_DAILY_FWD & ~0xFF: (0, 1, 2, 3, 4), P.DI645_DAILY_REV & ~0xFF: (5,),
            P.DI645_DAILY_RE1 & ~0xFF: (6,), P.DI645_DAILY_RE2 & ~0xFF: (7,),
            P.DI645_FWD_ACTIVE: (0, 1, 2, 3, 4),
            P.DI645_MONTH_FWD & ~0xFF: (0, 1, 2, 3, 4), P.DI645_MONTH_REV & ~0xFF: (5,),
            P.DI645_MONTH_RE1 & ~0xFF: (6,), P.DI645_MONTH_RE2 & ~0xFF: (7,)}
_DAILY_BASES = {di & ~0xFF for di in (P.DI645_DAILY_TIME, *P.DAILY_645.values())}
_MONTH_BASES = {di & ~0xFF for di in P.MONTH_645.values()}
OAD_EVENT_START, OAD_EVENT_END = 0x201E0200, 0x20200200       # 事件发生时间, 事件结束时间
_EVENT_OIS = {oi for _code, (_n, _zh, oi) in schema.EVENTS.items()}
_FLEET_TABLE_CELLS = 20_000_000    # meters × days a fleet-wide frozen table may cost (Answerer.frozen)
_645_MOD = 10 ** 8                  # XXXXXX.XX: a 4-byte BCD register shows the low 8 digits
ERR645_NO_DATA = 0x02               # DL/T 645-2007 ERR bit 1: 无请求数据


def _645_address(command: bytes) -> str | None:
    """The meter address of a DL/T 645 frame (None if ``command`` is not one)."""
    fr = Framer645()
    fr.feed(command)
    try:
        msg = fr.next_frame()
        return decode_message(msg).address if msg is not None else None
    except (ProtocolError, AttributeError):
        return None


class PreEncoded:
    """A response APDU whose bytes are already made (what the simulator's send path needs of an APDU)."""

    __slots__ = ("NAME", "service_number", "_bytes")

    def __init__(self, name: str, piid: int, data: bytes):
        self.NAME, self.service_number, self._bytes = name, piid, data

    def to_bytes(self) -> bytes:
        return self._bytes


def dts(t: _dt.datetime) -> Data:
    return Data(T_DTS, DateTimeS(t.year, t.month, t.day, t.hour, t.minute, t.second))


def dts_to_datetime(v) -> _dt.datetime:
    return _dt.datetime(v[0], v[1], v[2], v[3], v[4], v[5])


def energy(values, n: int) -> Data:
    return Data(T_ARRAY, tuple(Data(T_DLU, int(v)) for v in values[:n]))


class Answerer:
    """Answers for one fleet.  ``sim`` gives the clock (``sim.now()``), the fault model's
    ``record_available(meter, day, now)`` / ``meter_has(meter, day)``, and ``sim.fleet``."""

    __slots__ = ("sim", "fleet", "model", "control", "_tsa_cells", "_frozen_days")

    def __init__(self, sim):
        self.sim = sim
        self.fleet = sim.fleet
        self.model = sim.fleet.model
        self.control = ControlState(len(self.model))      # relays, 保电, meter clocks
        self._tsa_cells: dict[int, bytes] = {}             # meter -> its encoded TSA cell
        self._frozen_days: dict[int, np.ndarray] = {}      # day -> (M, 8) frozen registers (frozen())

    # --- values ----------------------------------------------------------------------------------
    def _freeze_value(self, oad: int, meter: int, regs, freeze: _dt.datetime, extra=None) -> Data:
        if oad == P.OAD_FREEZE_TIME:
            return dts(freeze)
        cols = _REG_COL.get(oad)
        if cols is not None:
            if cols[0] >= 6 and not self.model.reactive[meter]:
                return NULL
            return energy([regs[c] for c in cols], len(P.REGISTER_MAP[oad]))
        if oad == P.OAD_FWD_MAX_DEMAND and extra is not None:
            md, when = extra
            return Data(T_ARRAY, (Data(T_STRUCT, (Data(T_DLU, int(md)), dts(when))),))
        if oad == P.OAD_ACTIVE_POWER and extra is not None:
            return Data(T_ARRAY, (Data(T_DLONG, int(extra)),))
        return NULL

    def instant(self, oad: int, meter: int, now: _dt.datetime) -> tuple[Data | None, int | None]:
        """(data, dar) of a GET of ``oad`` from ``meter`` at ``now``."""
        m = self.model
        d, secs = m.day_of(now.date()), now.hour * 3600 + now.minute * 60 + now.second
        if d < 0:
            return None, DAR_UNAVAILABLE
        if oad in _REG_COL:
            regs = m.at([meter], d, secs)[0]
            return self._freeze_value(oad, meter, regs, now), None
        p = int(m.power_x1e4([meter], d, secs)[0])                      # 0.0001 kW
        jitter = int(self.sim.jitter(meter, d * 86400 + secs) * 60) - 30
        if oad == P.OAD_ACTIVE_POWER:
            return Data(T_ARRAY, (Data(T_DLONG, p),)), None
        if oad == P.OAD_VOLTAGE:                                           # 0.1 V
            return Data(T_ARRAY, tuple(Data(T_LU, 2200 + jitter + k) for k in range(3))), None
        if oad == P.OAD_CURRENT:                                           # 0.001 A, one phase carries it
            amps = p * 1000 // 10_000 * 1000 // 220
            return Data(T_ARRAY, (Data(T_DLONG, amps), Data(T_DLONG, 0), Data(T_DLONG, 0))), None
        if oad == P.OAD_POWER_FACTOR:
            return Data(T_ARRAY, (Data(T_LONG, int(round(1000 / np.hypot(1, m.tan[meter])))),)), None
        if oad == P.OAD_FREQUENCY:
            return Data(T_LU, 5000 + jitter // 10), None
        return None, DAR_UNAVAILABLE

    # --- (a) the concentrator's task records, and (d) its daily REPORT -----------------------------
    def task_rows(self, meters, days, rcsd, now: _dt.datetime, ms_tsas=None) -> tuple:
        """Rows of 60120300 for ``meters`` (indices) on freeze ``days``: only what the concentrator has
        collected by ``now`` (the fault model's missing records are left out)."""
        rows = []
        for d, freeze, have in self._collected(meters, days, now, ms_tsas):
            regs = self.model.frozen(have, d)
            for k, i in enumerate(have):
                rows.append(self._task_row(i, regs[k], d, freeze, rcsd))
        return tuple(rows)

    def _collected(self, meters, days, now, ms_tsas):
        """(day, freeze time, meters) of each freeze day: the meters (of ``ms_tsas`` if given) whose
        record the concentrator has by ``now``."""
        f = self.fleet
        want = None if ms_tsas is None else set(ms_tsas)
        for d in days:
            if d < 0:
                continue
            have = [i for i in meters if self.sim.record_available(i, d, now)
                    and (want is None or A.tsa(f.address[i]) in want)]
            if have:
                yield d, _dt.datetime.combine(self.model.date(d), _dt.time()), have

    def _task_row(self, i, regs, d, freeze, rcsd) -> tuple:
        start = freeze + _dt.timedelta(seconds=60 + int(self.sim.jitter(i, d) * 1800))
        out = []
        for c in rcsd:
            if isinstance(c, Road):
                out.append(Data(T_ARRAY, tuple(self._freeze_value(o, i, regs, freeze) for o in c.oads)))
            elif c == P.OAD_TARGET_TSA:
                out.append(Data(T_TSA, A.tsa(self.fleet.address[i])))
            elif c == P.OAD_COLLECT_START:
                out.append(dts(start))
            elif c == P.OAD_COLLECT_SUCCESS:
                out.append(dts(start + _dt.timedelta(seconds=3)))
            elif c == P.OAD_COLLECT_STORE:
                out.append(dts(freeze))
            else:
                out.append(self._freeze_value(c, i, regs, freeze))
        return tuple(out)

    # --- the hot answer, pre-encoded ------------------------------------------------------------------
    # A daily collection asks every concentrator for its 60120300 rows at once; building ~20 Data objects
    # per row and encoding them is what bounded the fleet (10,000 terminals × 32 meters: ~35 CPU s).  The
    # rows of DAILY_RCSD are therefore written straight to A-XDR bytes (bit-identical to the Data path,
    # tests/headend/test_simulator.py), and the response APDU is spliced around them.
    def _row_encoder(self, rcsd):
        """fn(i, regs, start) -> the bytes of one task row of ``rcsd``, or None (use the Data path).

        A row is the meter's TSA cell (cached) and one ``struct`` pack of everything else: date_time_s
        cells, array heads and tagged double-long-unsigned values; a meter without reactive registers
        has null cells there, so there are two shapes."""
        if rcsd[:len(P.DAILY_RCSD_HEAD)] != P.DAILY_RCSD_HEAD or len(rcsd) != len(P.DAILY_RCSD_HEAD) + 1:
            return None
        road = rcsd[-1]
        if not isinstance(road, Road) or len(road.oads) > 127:
            return None
        # per cell: ("t",) the freeze time, ("e", cols) an energy array, ("r", cols) one null if not reactive
        cells = []
        for oad in road.oads:
            cols = _REG_COL.get(oad)
            if oad == P.OAD_FREEZE_TIME:
                cells.append(("t", ()))
            elif cols is None:
                return None
            else:
                cols = cols[:len(P.REGISTER_MAP[oad])]
                cells.append(("r" if cols[0] >= 6 else "e", cols))
        dts_fmt = "BHBBBBB"
        shapes = {}
        for reactive in (False, True):
            fmt = ">" + dts_fmt * 3 + "BB"
            for kind, cols in cells:
                if kind == "t":
                    fmt += dts_fmt
                elif kind == "r" and not reactive:
                    fmt += "B"
                else:
                    fmt += "BB" + "BI" * len(cols)
            shapes[reactive] = struct.Struct(fmt).pack
        tsa, addr, is_reactive = self._tsa_cells, self.fleet.address, self.model.reactive
        head = (T_ARRAY, len(cells))
        three_s = _dt.timedelta(seconds=3)

        def row(i, regs, start, freeze_v):
            t = tsa.get(i)
            if t is None:
                t = tsa[i] = encode_data(Data(T_TSA, A.tsa(addr[i])))
            ok = start + three_s
            v = [T_DTS, start.year, start.month, start.day, start.hour, start.minute, start.second,
                 T_DTS, ok.year, ok.month, ok.day, ok.hour, ok.minute, ok.second, *freeze_v, *head]
            reactive = bool(is_reactive[i])
            for kind, cols in cells:
                if kind == "t":
                    v += freeze_v
                elif kind == "r" and not reactive:
                    v.append(T_NULL)
                else:
                    v += (T_ARRAY, len(cols))
                    for c in cols:
                        v += (T_DLU, regs[c])
            return t + shapes[reactive](*v)
        return row

    def task_rows_encoded(self, meters, days, rcsd, now: _dt.datetime, ms_tsas=None) -> tuple[int, bytes] | None:
        """(count, bytes) of what :meth:`task_rows` gives, already A-XDR encoded; None when ``rcsd`` is
        not the profile's DAILY_RCSD shape (the caller then takes the Data path)."""
        row = self._row_encoder(rcsd)
        if row is None:
            return None
        out = []
        for d, freeze, have in self._collected(meters, days, now, ms_tsas):
            regs = self.frozen(have, d).tolist()
            # the collection start time of each row: freeze + 60 s + jitter × 1800 s (Simulator.jitter)
            jit = unit_hash(self.sim.seed, np.asarray(have, np.int64), d, 7)
            secs = (60 + (jit * 1800).astype(np.int64)).tolist()
            freeze_v = (T_DTS, freeze.year, freeze.month, freeze.day, 0, 0, 0)
            out += [row(i, regs[k], freeze + _dt.timedelta(seconds=secs[k]), freeze_v) for k, i in enumerate(have)]
        return len(out), b"".join(out)

    def frozen(self, idx, d: int) -> np.ndarray:
        """``model.frozen(idx, d)`` from a fleet-wide table of day ``d`` computed once (a collection
        wave asks every terminal for the same day); per call when the table would be too big."""
        m = self.model
        if len(m) * max(d, 1) > _FLEET_TABLE_CELLS:
            return m.frozen(idx, d)
        table = self._frozen_days.get(d)
        if table is None:
            if len(self._frozen_days) >= 3:
                self._frozen_days.pop(next(iter(self._frozen_days)))
            table = self._frozen_days[d] = m.frozen(np.arange(len(m)), d)
        return table[np.asarray(idx, np.int64)]

    def report(self, meters, day: int, piid: int, now: _dt.datetime) -> A.ReportNotificationRecordList:
        rows = self.task_rows(meters, [day], P.DAILY_RCSD, now)
        return A.ReportNotificationRecordList(piid, (A.ResultRecord(P.OAD_TASK_RECORDS, P.DAILY_RCSD, rows),))

    def _days_in(self, sel) -> list[int]:
        """Freeze days whose 00:00 lies in [start, end) of a selector 6/7/8 range."""
        m = self.model
        try:
            a, b = dts_to_datetime(sel.start), dts_to_datetime(sel.end)
        except (TypeError, ValueError):
            return []
        first = m.day_of(a.date()) + (a.time() != _dt.time())
        last = m.day_of(b.date()) - (b.time() == _dt.time())
        return list(range(first, last + 1))[:366]

    def get_record(self, term, rec: A.GetRecord, now: _dt.datetime) -> A.ResultRecord:
        rsd = rec.rsd
        if rec.oad != P.OAD_TASK_RECORDS or rsd[0] not in (6, 7, 8):
            return A.ResultRecord(rec.oad, rec.rcsd, None, DAR_UNAVAILABLE)
        rcsd = rec.rcsd or P.DAILY_RCSD
        sel = rsd[1]
        days = [d for d in self._days_in(sel) if self.model.date(d) <= now.date()]
        tsas = sel.ms.value if sel.ms.choice == 3 else None
        return A.ResultRecord(rec.oad, rcsd, self.task_rows(term.meters, days, rcsd, now, tsas))

    def get_record_response(self, term, piid: int, rec: A.GetRecord, now: _dt.datetime):
        """GET-Response-Record to ``rec``: for the daily task records, an APDU pre-encoded by
        :meth:`task_rows_encoded` (same bytes as the Data path), else the ordinary one."""
        rsd, rcsd = rec.rsd, rec.rcsd or P.DAILY_RCSD
        enc = None
        if rec.oad == P.OAD_TASK_RECORDS and rsd[0] in (6, 7, 8):
            sel = rsd[1]
            days = [d for d in self._days_in(sel) if self.model.date(d) <= now.date()]
            tsas = sel.ms.value if sel.ms.choice == 3 else None
            enc = self.task_rows_encoded(term.meters, days, rcsd, now, tsas)
        if enc is None:
            return A.GetResponseRecord(piid, self.get_record(term, rec, now))
        empty = A.GetResponseRecord(piid, A.ResultRecord(rec.oad, rcsd, ())).to_bytes()
        # ... 01 (rows) 00 (count 0) 00 (no FollowReport) 00 (no TimeTag): the rows go after the choice
        if not empty.endswith(b"\x01\x00\x00\x00"):
            return A.GetResponseRecord(piid, self.get_record(term, rec, now))
        return PreEncoded("GET-Response-Record", piid,
                          empty[:-3] + encode_length(enc[0]) + enc[1] + b"\x00\x00")

    # --- (b) PROXY GetRequestRecord of one meter's freeze records ---------------------------------
    def meter_record(self, meter: int, rec: A.GetRecord, now: _dt.datetime) -> A.ResultRecord:
        m, rsd = self.model, rec.rsd
        if rec.oad >> 16 in _EVENT_OIS and rec.oad & 0xFF00 == 0x0200:
            return self.event_record(meter, rec, now)
        if rec.oad not in (P.OAD_DAY_FREEZE, P.OAD_MONTH_FREEZE, P.OAD_MINUTE_FREEZE):
            return A.ResultRecord(rec.oad, rec.rcsd, None, DAR_UNAVAILABLE)
        rcsd = rec.rcsd or {P.OAD_DAY_FREEZE: P.DAILY_METER_RCSD, P.OAD_MONTH_FREEZE: P.MONTHLY_METER_RCSD,
                            P.OAD_MINUTE_FREEZE: P.CURVE_METER_RCSD}[rec.oad]
        try:
            if rsd[0] == 1 and rsd[1].oad == P.OAD_FREEZE_TIME:
                times = [dts_to_datetime(rsd[1].value.value)]
            elif rsd[0] == 2 and rsd[1].oad == P.OAD_FREEZE_TIME:
                a, b = dts_to_datetime(rsd[1].start.value), dts_to_datetime(rsd[1].end.value)
                ti = rsd[1].interval.value
                step = _dt.timedelta(seconds=ti[1] * (1, 60, 3600, 86400)[ti[0]]) if ti[1] and ti[0] < 4 else None
                step = step or (_dt.timedelta(minutes=15) if rec.oad == P.OAD_MINUTE_FREEZE else _dt.timedelta(days=1))
                times = []
                while a < b and len(times) < 96 * 31:
                    times.append(a)
                    a += step
            else:
                return A.ResultRecord(rec.oad, rcsd, None, DAR_UNAVAILABLE)
        except (TypeError, ValueError, AttributeError, IndexError):
            return A.ResultRecord(rec.oad, rcsd, None, DAR_UNAVAILABLE)
        rows = []
        for t in times:
            d = m.day_of(t.date())
            secs = t.hour * 3600 + t.minute * 60 + t.second
            if d < 0 or t > now or not self._is_freeze(rec.oad, t) or not self.sim.meter_has(meter, d):
                continue
            regs = m.frozen([meter], d)[0] if secs == 0 else m.at([meter], d, secs)[0]
            extra = None
            if rec.oad == P.OAD_MONTH_FREEZE:
                prev = (t.replace(day=1) - _dt.timedelta(days=1)).replace(day=1)
                md, when = m.max_demand_x1e4([meter], m.day_of(prev.date()), d)
                extra = (md[0], _dt.datetime.combine(m.date(when[0]), _dt.time(19, 0)))
            elif rec.oad == P.OAD_MINUTE_FREEZE:
                extra = m.power_x1e4([meter], d, max(secs - 1, 0))[0]
            rows.append(tuple(self._freeze_value(c, meter, regs, t, extra) for c in rcsd))
        return A.ResultRecord(rec.oad, rcsd, tuple(rows))

    def event_record(self, meter: int, rec: A.GetRecord, now: _dt.datetime) -> A.ResultRecord:
        """Event records (OI 3xxx attribute 2) of one meter whose 事件发生时间 (201E0200) lies in the RSD 2
        range: the simulator's meters record power failures (3011, ``Simulator.power_down``); the other
        event objects exist and are empty.  An event not over by ``now`` has a null end time."""
        rsd, rcsd = rec.rsd, rec.rcsd or (OAD_EVENT_START, OAD_EVENT_END)
        try:
            if rsd[0] != 2 or rsd[1].oad != OAD_EVENT_START:
                return A.ResultRecord(rec.oad, rcsd, None, DAR_UNAVAILABLE)
            a, b = dts_to_datetime(rsd[1].start.value), dts_to_datetime(rsd[1].end.value)
        except (TypeError, ValueError, AttributeError, IndexError):
            return A.ResultRecord(rec.oad, rcsd, None, DAR_UNAVAILABLE)
        rows = []
        if rec.oad >> 16 == 0x3011:
            m = self.model
            for d in range(max(m.day_of(a.date()), 0), min(m.day_of(b.date()), m.day_of(now.date())) + 1):
                ev = self.sim.power_down(meter, d)
                if ev is None or not a <= ev[0] < b or ev[0] > now:
                    continue
                cells = {OAD_EVENT_START: dts(ev[0]), OAD_EVENT_END: dts(ev[1]) if ev[1] <= now else NULL}
                rows.append(tuple(cells.get(c, NULL) for c in rcsd))
        return A.ResultRecord(rec.oad, rcsd, tuple(rows))

    @staticmethod
    def _is_freeze(oad: int, t: _dt.datetime) -> bool:
        if oad == P.OAD_MINUTE_FREEZE:
            return t.second == 0 and t.minute % 15 == 0
        if oad == P.OAD_MONTH_FREEZE:
            return t.day == 1 and t.time() == _dt.time()
        return t.time() == _dt.time()

    # --- (c) DL/T 645 through the concentrator ---------------------------------------------------------
    def port_dar(self, term, port: int, command: bytes) -> int | None:
        """The DAR of a TransCommand on ``port`` that cannot reach the addressed meter, None if it can.

        A port the concentrator does not have (no meter of its archive on it) is 对象不存在 (DAR 6);
        a port it has, but the addressed meter is not on, is forwarded and never answered: 请求超时
        (DAR 33), what a concentrator reports when the meter stays silent."""
        if port not in term.ports:
            return DAR_UNAVAILABLE
        meter = term.by_address.get(_645_address(command))
        if meter is not None and int(self.fleet.port[meter]) != port:
            return DAR_TIMEOUT
        return None

    def trans_645(self, term, command: bytes, now: _dt.datetime) -> bytes | None:
        """The 645 meter's answer to ``command`` (None: no meter answers that address)."""
        fr = Framer645()
        fr.feed(command)
        try:
            msg = fr.next_frame()
            req = decode_message(msg) if msg is not None else None
        except ProtocolError:
            return None
        if not isinstance(req, ReadRequest):
            return None
        meter = term.by_address.get(req.address)
        if meter is None or not self.fleet.is645[meter]:
            return None
        m, di = self.model, req.di
        today = m.day_of(now.date())
        n = di & 0xFF
        base = di & ~0xFF
        if _DI_COLS.get(base, (0,))[0] >= 6 and not m.reactive[meter]:
            # a meter without reactive registers (a household's) has no such item: 无请求数据, as a
            # 698 meter answers NULL in that column
            return Err645(req.address, 0x11, ERR645_NO_DATA).to_bytes()
        if base in _DAILY_BASES:
            d = today + 1 - n                    # profile (c): 上1次 = the most recent freeze, today's 00:00
            if not 1 <= n <= P.MAX_DAYS_BACK_645 or d < 0 or not self.sim.meter_has(meter, d):
                return Err645(req.address, 0x11, ERR645_NO_DATA).to_bytes()
            if base == P.DI645_DAILY_TIME & ~0xFF:
                return ReadResponse.of(req.address, di, [m.date(d).strftime("%y%m%d0000")]).to_bytes()
            regs = m.frozen([meter], d)[0]
            vals = [int(regs[c]) % _645_MOD for c in _DI_COLS[base]]
            return ReadResponse.of(req.address, di, vals).to_bytes()
        if di == P.DI645_FWD_ACTIVE:
            regs = m.at([meter], today, now.hour * 3600 + now.minute * 60 + now.second)[0]
            return ReadResponse.of(req.address, di, [int(regs[c]) % _645_MOD for c in (0, 1, 2, 3, 4)]).to_bytes()
        if base in _MONTH_BASES and 1 <= n <= 12:
            first = now.date().replace(day=1)
            for _ in range(n - 1):
                first = (first - _dt.timedelta(days=1)).replace(day=1)
            d = m.day_of(first)
            if d < 0:
                return Err645(req.address, 0x11, ERR645_NO_DATA).to_bytes()
            if base == P.DI645_MONTH_MD & ~0xFF:
                # 最大需量及发生时间: the month before the settlement day, as the 698 月冻结 answers
                prev = (first - _dt.timedelta(days=1)).replace(day=1)
                md, when = m.max_demand_x1e4([meter], m.day_of(prev), d)
                at = _dt.datetime.combine(m.date(when[0]), _dt.time(19, 0))
                return ReadResponse.of(req.address, di, [int(md[0]) % 10 ** 6, at]).to_bytes()
            regs = m.frozen([meter], d)[0]
            return ReadResponse.of(req.address, di, [int(regs[c]) % _645_MOD for c in _DI_COLS[base]]).to_bytes()
        return Err645(req.address, 0x11, ERR645_NO_DATA).to_bytes()


# --- remote control (遥控 8000, 保电 8001, 对时 of meters; DL/T 645 1CH / 14H / 08H) -------------
OAD_RELAY_STATE, OAD_COMMAND_STATE, OAD_PROTECT_STATE = 0x80000300, 0x80000500, 0x80010200
_CONTROL_OADS = (OAD_RELAY_STATE, OAD_COMMAND_STATE, OAD_PROTECT_STATE, P.OAD_DATETIME)
DAR_OK, DAR_DENIED, DAR_TYPE = 0, 3, 7
DI645_DATE, DI645_TIME, DI645_STATUS3 = 0x04000101, 0x04000102, 0x04000503
ERR645_OTHER, ERR645_UNAUTHORIZED = 0x01, 0x04


def _bits(flag) -> Data:
    from gridhead.protocols.dlt698.axdr import BitString
    return Data(4, BitString(8, bytes((0x80 if flag else 0,))))


class _ControlAnswers:
    """What the simulated meters answer to the operators' commands (headend/commands.py sends them)."""

    def __init__(self, sim, term):
        self.sim, self.t, self.st = sim, term, sim.answers.control

    def meter_clock(self, m: int) -> _dt.datetime:
        return self.sim.terminal_now(self.t) + _dt.timedelta(seconds=float(self.st.clock_offset_s[m]))

    def get(self, oad: int, m: int, now) -> A.ResultNormal:
        st = self.st
        if oad == OAD_RELAY_STATE:
            return A.ResultNormal(oad, _bits(st.relay_open[m]))
        if oad == OAD_COMMAND_STATE:
            return A.ResultNormal(oad, _bits(st.trip_command[m]))
        if oad == OAD_PROTECT_STATE:
            return A.ResultNormal(oad, Data(22, int(bool(st.protected[m]))))
        if oad == P.OAD_DATETIME:
            return A.ResultNormal(oad, dts(self.meter_clock(m)))
        return self.sim.get_value(self.t, oad, now, m)

    def action(self, omd: int, m: int) -> int:
        st = self.st
        if omd == OMD_TRIP:
            return DAR_OK if st.trip(m) else DAR_DENIED
        if omd == OMD_CLOSE:
            return DAR_OK                          # the mode is applied by the caller (it reads the data)
        if omd in (OMD_PROTECT_ON, OMD_PROTECT_OFF):
            st.protected[m] = omd == OMD_PROTECT_ON
            return DAR_OK
        return DAR_UNAVAILABLE

    def set_clock(self, m: int, data) -> int:
        try:
            v = data.value
            when = _dt.datetime(*v[:3], *v[4:7]) if data.tag == 25 else dts_to_datetime(v)
        except (AttributeError, TypeError, ValueError, IndexError):
            return DAR_TYPE
        self.st.clock_offset_s[m] = (when - self.sim.terminal_now(self.t)).total_seconds()
        return DAR_OK

    def proxy(self, req, now):
        """PROXY Get/Set/Action lists that touch the control objects; None for the collection's own."""
        if isinstance(req, A.ProxyGetRequestList):
            if not any(o in _CONTROL_OADS for tg in req.targets for o in tg.items):
                return None
            out = []
            for tg in req.targets:
                m = self.sim.meter_at(self.t, tg.tsa)
                out.append(A.ProxyResult(tg.tsa, tuple(A.ResultNormal(o, None, DAR_TIMEOUT) if m is None
                                                       else self.get(o, m, now) for o in tg.items)))
            return A.ProxyGetResponseList(req.piid, tuple(out))
        if isinstance(req, A.ProxyActionRequestList):
            out = []
            for tg in req.targets:
                m = self.sim.meter_at(self.t, tg.tsa)
                res = []
                for it in tg.items:
                    if m is None:
                        res.append(A.ActionResult(it.omd, DAR_TIMEOUT))
                        continue
                    dar = self.action(it.omd, m)
                    if it.omd == OMD_CLOSE and dar == DAR_OK:
                        try:
                            direct = bool(it.data.value[0].value[1].value)
                        except (AttributeError, IndexError, TypeError):
                            direct = False
                        self.st.close(m, direct)
                    res.append(A.ActionResult(it.omd, dar))
                out.append(A.ProxyResult(tg.tsa, tuple(res)))
            return A.ProxyActionResponseList(req.piid, tuple(out))
        if isinstance(req, A.ProxySetRequestList):
            out = []
            for tg in req.targets:
                m = self.sim.meter_at(self.t, tg.tsa)
                res = tuple(A.SetResult(it.oad, DAR_TIMEOUT if m is None else
                                        self.set_clock(m, it.data) if it.oad == P.OAD_DATETIME else DAR_DENIED)
                            for it in tg.items)
                out.append(A.ProxyResult(tg.tsa, res))
            return A.ProxySetResponseList(req.piid, tuple(out))
        return None

    def trans_645(self, req, now):
        """A 645 control / clock frame forwarded to a 645 meter: its answer (bytes), b"" for none
        (a broadcast time sync is not answered), None when the frame is not one of these."""
        from gridhead.protocols.dlt645 import (BroadcastTimeSync, RemoteCommand, RemoteControlRequest,
                                      RemoteControlResponse, WriteRequest, WriteResponse)
        fr = Framer645()
        fr.feed(req.command)
        try:
            f = fr.next_frame()
            msg = decode_message(f) if f is not None else None
        except ProtocolError:
            return None
        if not isinstance(msg, (RemoteControlRequest, WriteRequest, BroadcastTimeSync, ReadRequest)):
            return None
        if isinstance(msg, ReadRequest) and msg.di not in (DI645_DATE, DI645_TIME, DI645_STATUS3):
            return None
        if isinstance(msg, WriteRequest) and msg.di not in (DI645_DATE, DI645_TIME):
            return None
        m = self.t.by_address.get(msg.address)
        if isinstance(msg, BroadcastTimeSync):
            targets = self.t.meters if msg.address == "999999999999" else ([m] if m is not None else [])
            for i in targets:
                if self.sim.fleet.is645[i]:
                    self.st.clock_offset_s[i] = (dts_to_datetime(_t6(msg.time)) - self.sim.terminal_now(self.t)).total_seconds()
            return b""
        if m is None or not self.sim.fleet.is645[m]:
            return b""
        st, a = self.st, msg.address
        if isinstance(msg, ReadRequest):
            c = self.meter_clock(m)
            if msg.di == DI645_DATE:
                v = c.strftime("%y%m%d") + f"{c.isoweekday() % 7:02d}"
            elif msg.di == DI645_TIME:
                v = c.time().replace(microsecond=0)
            else:
                v = (0x10 if st.relay_open[m] else 0) | (0x40 if st.trip_command[m] else 0)
            return ReadResponse.of(a, msg.di, [v]).to_bytes()
        if msg.password != st.password_645 or msg.operator == "00000000":
            return Err645(a, msg.function, ERR645_UNAUTHORIZED).to_bytes()
        st.last_operator[m] = msg.operator
        if isinstance(msg, WriteRequest):
            c = self.meter_clock(m)
            try:
                p = msg.payload
                if msg.di == DI645_DATE:          # YYMMDDWW, sent +33 reversed: WW DD MM YY
                    y, mo, d = p[3], p[2], p[1]
                    c = c.replace(year=2000 + int(f"{y:02x}"), month=int(f"{mo:02x}"), day=int(f"{d:02x}"))
                else:                              # hhmmss: ss mm hh
                    c = c.replace(hour=int(f"{p[2]:02x}"), minute=int(f"{p[1]:02x}"), second=int(f"{p[0]:02x}"))
            except (ValueError, IndexError):
                return Err645(a, msg.function, ERR645_OTHER).to_bytes()
            st.clock_offset_s[m] = (c - self.sim.terminal_now(self.t)).total_seconds()
            return WriteResponse(a).to_bytes()
        cmd = msg.command
        if cmd == RemoteCommand.TRIP and not st.trip(m):
            return Err645(a, msg.function, ERR645_OTHER).to_bytes()        # 保电: the trip is refused
        if cmd in (RemoteCommand.CLOSE_ALLOWED, RemoteCommand.CLOSE_DIRECT):
            st.close(m, cmd == RemoteCommand.CLOSE_DIRECT)
        elif cmd in (RemoteCommand.PROTECT_ON, RemoteCommand.PROTECT_OFF):
            st.protected[m] = cmd == RemoteCommand.PROTECT_ON
        return RemoteControlResponse(a).to_bytes()


def _t6(digits: str):
    """YYMMDDhhmmss digits -> the tuple dts_to_datetime takes."""
    return (2000 + int(digits[0:2]), int(digits[2:4]), int(digits[4:6]), int(digits[6:8]), int(digits[8:10]),
            int(digits[10:12]))


def control_answer(sim, term, req, now):
    """The answer of a simulated terminal (or of its meters) to an operator's command, or None when
    ``req`` is not one (the simulator then answers it as before)."""
    c = _ControlAnswers(sim, term)
    if isinstance(req, A.ProxyTransCommandRequest):
        if sim.answers.port_dar(term, req.port, req.command) is not None:
            return None                    # not on that port: the simulator answers its DAR as for a read
        raw = c.trans_645(req, now)
        if raw is None:
            return None
        return A.ProxyTransCommandResponse(req.piid, req.port, raw or None, None if raw else DAR_TIMEOUT)
    return c.proxy(req, now)
