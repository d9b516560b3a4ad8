"""Hypothesis strategies for DL/T 698.45 A-XDR values, and converters to and from the ``dlt698`` peer.

For reuse by any 698.45 test (APDUs included)::

    from tests.strategies698 import data, bare, oads, to_peer, from_peer

    data(max_depth=3, peer=False)  -> strategy of Data (nested arrays / structures of every type)
    bare(tag, peer=False)          -> strategy of the bare value of type ``tag`` (e.g. Tag.RSD)
    oads()                         -> strategy of OAD ints
    to_peer(data) -> dlt698._native.Data;  from_peer(peer_data) -> Data

``peer=True`` keeps to the values the peer accepts as well as we do: visible-strings of printable ASCII
(20H-7EH), bit-strings with zero padding bits, no NaN (NaN != NaN: tested apart).  Everything else the
standard allows is generated either way.
"""

from __future__ import annotations

import functools

from hypothesis import strategies as st

from gridhead.protocols.dlt698.axdr import (COMDCB, MS, RSD, SID, SIDMAC, TI, BitString, Data, Date, DateTime,
                                   DateTimeS, Region, Road, ScalerUnit, Selector1, Selector2, SelectorLast,
                                   SelectorRange, SelectorTime, Tag, Time)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


def oads():
    # mostly real-looking OADs (attribute 2, small index), sometimes anything
    return st.one_of(st.builds(lambda oi, a, i: (oi << 16) | (a << 8) | i, u16, st.integers(1, 31),
                               st.integers(0, 12)), u32)


def _bit_string(peer: bool):
    def build(bits, raw):
        data = bytearray(raw[:(bits + 7) // 8].ljust((bits + 7) // 8, b"\0"))
        if peer and bits % 8:
            data[-1] &= (0xFF << (8 - bits % 8)) & 0xFF
        return BitString(bits, bytes(data))
    return st.builds(build, st.integers(0, 300), st.binary(max_size=38))


def _tsa():
    return st.integers(0, 15).flatmap(
        lambda n: st.builds(lambda hi, addr: bytes((hi << 4 | n,)) + addr, st.integers(0, 15),
                            st.binary(min_size=n + 1, max_size=n + 1)))


def _region(leaf):
    return st.builds(Region, st.integers(0, 3), leaf, leaf)


def _ms(leaf=None):
    return st.one_of(
        st.builds(MS, st.sampled_from((0, 1)), st.none()),
        st.builds(MS, st.just(2), st.lists(u8, max_size=5).map(tuple)),
        st.builds(MS, st.just(3), st.lists(_tsa(), max_size=3).map(tuple)),
        st.builds(MS, st.just(4), st.lists(u16, max_size=5).map(tuple)),
        st.builds(MS, st.just(5), st.lists(_region(st.builds(Data, st.just(Tag.UNSIGNED), u8)), max_size=2)
                  .map(tuple)),
        st.builds(MS, st.just(6), st.lists(_region(st.builds(Data, st.just(Tag.TSA), _tsa())), max_size=2)
                  .map(tuple)),
        st.builds(MS, st.just(7), st.lists(_region(st.builds(Data, st.just(Tag.LONG_UNSIGNED), u16)), max_size=2)
                  .map(tuple)),
    )


def _dts():
    return st.builds(DateTimeS, u16, u8, u8, u8, u8, u8)


def _rsd(leaf):
    sel2 = st.builds(Selector2, oads(), leaf, leaf, leaf)
    ms = _ms(leaf)
    return st.one_of(
        st.just(RSD(0, None)),
        st.builds(lambda o, v: RSD(1, Selector1(o, v)), oads(), leaf),
        st.builds(lambda v: RSD(2, v), sel2),
        st.builds(lambda v: RSD(3, tuple(v)), st.lists(sel2, max_size=3)),
        st.builds(lambda s, t, m: RSD(s, SelectorTime(t, m)), st.sampled_from((4, 5)), _dts(), ms),
        st.builds(lambda s, a, b, ti, m: RSD(s, SelectorRange(a, b, ti, m)), st.sampled_from((6, 7, 8)),
                  _dts(), _dts(), _ti(), ms),
        st.builds(lambda n: RSD(9, n), u8),
        st.builds(lambda n, m: RSD(10, SelectorLast(n, m)), u8, ms),
    )


def _ti():
    return st.builds(TI, st.integers(0, 5), u16)


def _road():
    return st.builds(lambda o, os: Road(o, tuple(os)), oads(), st.lists(oads(), max_size=5))


def _csd():
    return st.one_of(oads(), _road())


@functools.lru_cache(maxsize=None)
def _leaf_data(peer: bool):
    """Data of every type that does not hold Data (the leaves of the tree)."""
    return st.one_of([st.builds(Data, st.just(tag), bare(tag, peer)) for tag in Tag
                      if tag not in (Tag.ARRAY, Tag.STRUCTURE, Tag.REGION, Tag.RSD, Tag.MS)])


@functools.lru_cache(maxsize=None)
def bare(tag: int, peer: bool = False, leaf=None):
    """A strategy of the Python value of type ``tag`` (what ``decode_typed(tag, ...)`` returns)."""
    if leaf is None and tag in (Tag.ARRAY, Tag.STRUCTURE, Tag.REGION, Tag.RSD, Tag.MS):
        leaf = _leaf_data(peer)
    t = Tag(tag)
    simple = {
        Tag.NULL: st.none(), Tag.BOOL: st.booleans(),
        Tag.DOUBLE_LONG: st.integers(-(1 << 31), (1 << 31) - 1), Tag.DOUBLE_LONG_UNSIGNED: u32,
        Tag.OCTET_STRING: st.binary(max_size=300), Tag.INTEGER: st.integers(-128, 127),
        Tag.LONG: st.integers(-32768, 32767), Tag.UNSIGNED: u8, Tag.LONG_UNSIGNED: u16,
        Tag.LONG64: st.integers(-(1 << 63), (1 << 63) - 1), Tag.LONG64_UNSIGNED: st.integers(0, (1 << 64) - 1),
        Tag.ENUM: u8, Tag.OI: u16, Tag.OAD: oads(), Tag.OMD: u32,
        Tag.UTF8_STRING: st.text(max_size=20),
        Tag.VISIBLE_STRING: (st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
                             if peer else st.text(st.characters(max_codepoint=0xFF), max_size=40)),
        Tag.FLOAT32: st.floats(width=32, allow_nan=not peer),
        Tag.FLOAT64: st.floats(allow_nan=not peer),
        Tag.DATE_TIME: st.builds(DateTime, u16, u8, u8, u8, u8, u8, u8, u16),
        Tag.DATE: st.builds(Date, u16, u8, u8, u8), Tag.TIME: st.builds(Time, u8, u8, u8),
        Tag.DATE_TIME_S: _dts(), Tag.TI: _ti(), Tag.TSA: _tsa(), Tag.MAC: st.binary(max_size=16),
        Tag.RN: st.binary(max_size=16), Tag.SCALER_UNIT: st.builds(ScalerUnit, st.integers(-128, 127), u8),
        Tag.ROAD: _road(), Tag.CSD: _csd(), Tag.RCSD: st.lists(_csd(), max_size=5).map(tuple),
        Tag.SID: st.builds(SID, u32, st.binary(max_size=8)),
        Tag.SID_MAC: st.builds(SIDMAC, st.builds(SID, u32, st.binary(max_size=8)), st.binary(max_size=8)),
        Tag.COMDCB: st.builds(COMDCB, st.sampled_from([*range(11), 255]), st.integers(0, 2), st.integers(5, 8),
                              st.integers(1, 2), st.integers(0, 2)),
        Tag.BIT_STRING: _bit_string(peer),
    }
    if t in simple:
        return simple[t]
    if t in (Tag.ARRAY, Tag.STRUCTURE):
        return st.lists(leaf, max_size=6).map(tuple)
    if t == Tag.REGION:
        return _region(leaf)
    if t == Tag.RSD:
        return _rsd(leaf)
    return _ms(leaf)


def data(max_depth: int = 3, peer: bool = False):
    """Arbitrary nested Data: leaves of every type, arrays / structures / Region / RSD / MS of Data."""
    def extend(inner):
        return st.one_of(
            st.builds(Data, st.sampled_from((Tag.ARRAY, Tag.STRUCTURE)), st.lists(inner, max_size=6).map(tuple)),
            st.builds(Data, st.just(Tag.REGION), _region(inner)),
            st.builds(Data, st.just(Tag.RSD), _rsd(inner)),
            st.builds(Data, st.just(Tag.MS), _ms(inner)),
        )
    return st.recursive(_leaf_data(peer), extend, max_leaves=12 * max_depth)


# --- the dlt698 peer's Data ------------------------------------------------------------------------
def _peer():
    import dlt698._native as n
    return n


_PEER_SIMPLE = {  # tag -> the peer's factory name, for values it takes as they are
    Tag.BOOL: "boolean", Tag.DOUBLE_LONG: "int32", Tag.DOUBLE_LONG_UNSIGNED: "uint32",
    Tag.OCTET_STRING: "octet_string", Tag.VISIBLE_STRING: "visible_string", Tag.UTF8_STRING: "utf8_string",
    Tag.INTEGER: "int8", Tag.LONG: "int16", Tag.UNSIGNED: "uint8", Tag.LONG_UNSIGNED: "uint16",
    Tag.LONG64: "int64", Tag.LONG64_UNSIGNED: "uint64", Tag.ENUM: "enumeration", Tag.FLOAT32: "float32",
    Tag.FLOAT64: "float64", Tag.OI: "oi", Tag.TSA: "tsa", Tag.MAC: "mac", Tag.RN: "rn",
}
_PEER_DATES = {Tag.DATE_TIME: ("date_time", ">HBBBBBBH"), Tag.DATE: ("date", ">HBBB"),
               Tag.TIME: ("time", ">BBB"), Tag.DATE_TIME_S: ("date_time_s", ">HBBBBB")}


def _date_bytes(v, fmt) -> list[int]:
    import struct
    return list(struct.pack(fmt, *v))


def _p_oad(o):
    n = _peer()
    return n.Oad(oi=o >> 16, attribute=(o >> 8) & 0xFF, index=o & 0xFF)


def _p_road(r):
    n = _peer()
    return n.Road(attribute=_p_oad(r.oad), associated=[_p_oad(o) for o in r.oads])


def _p_csd(c):
    return _p_oad(c) if isinstance(c, int) else _p_road(c)


def _p_region(r):
    return _peer().Region(boundary=r.unit, begin=to_peer(r.start), end=to_peer(r.end))


def _p_dts(t):
    return _peer().DateTimeS(value=_date_bytes(t, ">HBBBBB"))


def _p_ms(m):
    n = _peer()
    c, v = m
    return [lambda: n.NoMeters(), lambda: n.AllMeters(), lambda: n.MeterTypes(values=bytes(v)),
            lambda: n.MeterAddresses(values=[n.Tsa(value=t) for t in v]),
            lambda: n.MeterNumbers(values=list(v)),
            lambda: n.MeterTypeRegions(values=[_p_region(r) for r in v]),
            lambda: n.MeterAddressRegions(values=[_p_region(r) for r in v]),
            lambda: n.MeterNumberRegions(values=[_p_region(r) for r in v])][c]()


def _p_sel2(s):
    return _peer().Selector2(attribute=_p_oad(s.oad), begin=to_peer(s.start), end=to_peer(s.end),
                             interval=to_peer(s.interval))


def _p_rsd(r):
    n = _peer()
    s, v = r
    if s == 0:
        return n.SelectAll()
    if s == 1:
        return n.Selector1(attribute=_p_oad(v.oad), value=to_peer(v.value))
    if s == 2:
        return _p_sel2(v)
    if s == 3:
        return n.Selector3(ranges=[_p_sel2(x) for x in v])
    if s in (4, 5):
        return getattr(n, f"Selector{s}")(time=_p_dts(v.time), meters=_p_ms(v.ms))
    if s in (6, 7, 8):
        return getattr(n, f"Selector{s}")(begin=_p_dts(v.start), end=_p_dts(v.end),
                                          interval=n.Ti(unit=v.interval.unit, interval=v.interval.interval),
                                          meters=_p_ms(v.ms))
    if s == 9:
        return n.Selector9(previous=v)
    return n.Selector10(latest=v.last, meters=_p_ms(v.ms))


def to_peer(d: Data):
    """Our Data as the peer's ``dlt698._native.Data``."""
    n = _peer()
    D = n.Data
    tag, v = d
    if tag in _PEER_SIMPLE:
        return getattr(D, _PEER_SIMPLE[tag])(v)
    if tag in _PEER_DATES:
        name, fmt = _PEER_DATES[tag]
        return getattr(D, name)(_date_bytes(v, fmt))
    if tag == Tag.NULL:
        return D.null()
    if tag in (Tag.ARRAY, Tag.STRUCTURE):
        return (D.array if tag == Tag.ARRAY else D.structure)([to_peer(x) for x in v])
    if tag == Tag.BIT_STRING:
        return D.bit_string(v.bits, v.data)
    if tag == Tag.OAD:
        return D.oad(_p_oad(v))
    if tag == Tag.OMD:
        return D.omd(n.Omd(oi=v >> 16, method=(v >> 8) & 0xFF, mode=v & 0xFF))
    if tag == Tag.ROAD:
        return D.road(_p_road(v))
    if tag == Tag.TI:
        return D.ti(n.Ti(unit=v.unit, interval=v.interval))
    if tag == Tag.REGION:
        return D.region(_p_region(v))
    if tag == Tag.SCALER_UNIT:
        return D.scaler_unit(n.ScalerUnit(scaler=v.scaler, unit=v.unit))
    if tag == Tag.RSD:
        return D.rsd(_p_rsd(v))
    if tag == Tag.CSD:
        return D.csd(_p_csd(v))
    if tag == Tag.RCSD:
        return D.rcsd([_p_csd(c) for c in v])
    if tag == Tag.MS:
        return D.ms(_p_ms(v))
    if tag == Tag.SID:
        return D.sid(n.Sid(identifier=v.identifier, additional=v.additional))
    if tag == Tag.SID_MAC:
        return D.sid_mac(n.SidMac(sid=n.Sid(identifier=v.sid.identifier, additional=v.sid.additional),
                                  mac=n.Mac(value=v.mac)))
    if tag == Tag.COMDCB:
        return D.comdcb(n.Comdcb(baud=v.baud, parity=v.parity, data_bits=v.data_bits, stop_bits=v.stop_bits,
                                 flow_control=v.flow_control))
    raise ValueError(f"no peer form for tag {tag}")


def _f_oad(o) -> int:
    return (o.oi << 16) | (o.attribute << 8) | o.index


def _f_road(r) -> Road:
    return Road(_f_oad(r.attribute), tuple(_f_oad(o) for o in r.associated))


def _f_csd(c):
    n = _peer()
    return _f_oad(c) if isinstance(c, n.Oad) else _f_road(c)


def _f_dts(t) -> DateTimeS:
    b = t.value
    return DateTimeS((b[0] << 8) | b[1], *b[2:])


def _f_region(r) -> Region:
    return Region(r.boundary, from_peer(r.begin), from_peer(r.end))


def _f_ms(m) -> MS:
    n = _peer()
    kinds = [n.NoMeters, n.AllMeters, n.MeterTypes, n.MeterAddresses, n.MeterNumbers, n.MeterTypeRegions,
             n.MeterAddressRegions, n.MeterNumberRegions]
    c = next(i for i, k in enumerate(kinds) if isinstance(m, k))
    if c <= 1:
        return MS(c, None)
    if c == 2:
        return MS(2, tuple(m.values))
    if c == 3:
        return MS(3, tuple(t.value for t in m.values))
    if c == 4:
        return MS(4, tuple(m.values))
    return MS(c, tuple(_f_region(r) for r in m.values))


def _f_sel2(s) -> Selector2:
    return Selector2(_f_oad(s.attribute), from_peer(s.begin), from_peer(s.end), from_peer(s.interval))


def _f_rsd(s) -> RSD:
    n = _peer()
    name = type(s).__name__
    if name == "SelectAll":
        return RSD(0, None)
    k = int(name[len("Selector"):])
    if k == 1:
        return RSD(1, Selector1(_f_oad(s.attribute), from_peer(s.value)))
    if k == 2:
        return RSD(2, _f_sel2(s))
    if k == 3:
        return RSD(3, tuple(_f_sel2(x) for x in s.ranges))
    if k in (4, 5):
        return RSD(k, SelectorTime(_f_dts(s.time), _f_ms(s.meters)))
    if k in (6, 7, 8):
        return RSD(k, SelectorRange(_f_dts(s.begin), _f_dts(s.end), TI(s.interval.unit, s.interval.interval),
                                    _f_ms(s.meters)))
    if k == 9:
        return RSD(9, s.previous)
    assert isinstance(s, n.Selector10)
    return RSD(10, SelectorLast(s.latest, _f_ms(s.meters)))


def from_peer(p) -> Data:
    """The peer's Data as ours."""
    tag = Tag(int(p.type))
    v = p.value
    if tag in _PEER_SIMPLE:
        return Data(tag, bytes(v) if isinstance(v, (bytes, bytearray)) else v)
    if tag in _PEER_DATES:
        import struct
        cls = {Tag.DATE_TIME: DateTime, Tag.DATE: Date, Tag.TIME: Time, Tag.DATE_TIME_S: DateTimeS}[tag]
        return Data(tag, cls._make(struct.unpack(_PEER_DATES[tag][1], bytes(v))))
    if tag == Tag.NULL:
        return Data(tag, None)
    if tag in (Tag.ARRAY, Tag.STRUCTURE):
        return Data(tag, tuple(from_peer(x) for x in v))
    if tag == Tag.BIT_STRING:
        return Data(tag, BitString(v.bit_count, bytes(v.value)))
    if tag == Tag.OAD:
        return Data(tag, _f_oad(v))
    if tag == Tag.OMD:
        return Data(tag, (v.oi << 16) | (v.method << 8) | v.mode)
    if tag == Tag.ROAD:
        return Data(tag, _f_road(v))
    if tag == Tag.TI:
        return Data(tag, TI(v.unit, v.interval))
    if tag == Tag.REGION:
        return Data(tag, _f_region(v))
    if tag == Tag.SCALER_UNIT:
        return Data(tag, ScalerUnit(v.scaler, v.unit))
    if tag == Tag.RSD:
        return Data(tag, _f_rsd(v))
    if tag == Tag.CSD:
        return Data(tag, _f_csd(v))
    if tag == Tag.RCSD:
        return Data(tag, tuple(_f_csd(c) for c in v))
    if tag == Tag.MS:
        return Data(tag, _f_ms(v))
    if tag == Tag.SID:
        return Data(tag, SID(v.identifier, bytes(v.additional)))
    if tag == Tag.SID_MAC:
        return Data(tag, SIDMAC(SID(v.sid.identifier, bytes(v.sid.additional)), bytes(v.mac.value)))
    if tag == Tag.COMDCB:
        return Data(tag, COMDCB(v.baud, v.parity, v.data_bits, v.stop_bits, v.flow_control))
    raise ValueError(f"no conversion for peer tag {tag}")
