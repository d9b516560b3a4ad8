"""The hot DL/T 698.45 APDUs in one pass: pure-Python twin of the compiled ``protocols._apdu698``.

:func:`decode` takes a whole APDU and returns the object :func:`protocols.dlt698.apdu.decode_apdu`
gives for it, or None when it is not one of the services below or does not decode whole (the
general walk then decodes it, or words the error).  These are what a head-end receives by the
thousand: readings, reports and proxy answers from meters and concentrators (clause 7.4)::

    01      LINK-Request                  PIID-ACD  type  heartbeat(long-unsigned)  date_time
    85 01   GET-Response-Normal           PIID-ACD  A-ResultNormal                  trailer
    85 02   GET-Response-NormalList       PIID-ACD  SEQUENCE OF A-ResultNormal      trailer
    85 03   GET-Response-Record           PIID-ACD  A-ResultRecord                  trailer
    85 04   GET-Response-RecordList       PIID-ACD  SEQUENCE OF A-ResultRecord      trailer
    88 01   REPORT-Notification-List      PIID-ACD  SEQUENCE OF A-ResultNormal      trailer
    88 02   REPORT-Notification-RecordList PIID-ACD SEQUENCE OF A-ResultRecord      trailer
    89 01   PROXY-Response-GetList        PIID-ACD  SEQUENCE OF {TSA, SEQUENCE OF A-ResultNormal}  trailer
    89 02   PROXY-Response-GetRecord      PIID-ACD  TSA  A-ResultRecord             trailer

    A-ResultNormal  OAD, CHOICE {0 DAR, 1 Data}
    A-ResultRecord  OAD, RCSD, CHOICE {0 DAR, 1 SEQUENCE OF A-RecordRow (one Data per RCSD column)}
    trailer         FollowReport OPTIONAL, TimeTag OPTIONAL

Data, RCSD, TSA, date_time(_s) and TI are read by the A-XDR layer, so values are the ones
``axdr.decode_data`` gives.  The APDU classes are the caller's: ``protocols.dlt698.apdu`` passes itself
with every call, so this module imports no APDU module (nor the compiled walk).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .dlt698 import axdr
from .dlt698._codec import Codec, DecodeError, seq
from .errors import GridheadError


class _Miss(Exception):
    """Not decodable here: the caller takes the general walk, which also words the error."""


if TYPE_CHECKING:
    from .dlt698 import apdu as _A
    from .dlt698.apdu import Apdu
else:
    _A = None          # protocols.dlt698.apdu: the classes of the last call's ``classes``

# a walk: the value at buf[pos] and the position after it; _Miss when it is not one the walk knows
_Walk = Callable[[bytes, int], tuple[Any, int]]


def _u8(buf: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(buf):
        raise _Miss
    return buf[pos], pos + 1


def _u32(buf: bytes, pos: int) -> tuple[int, int]:
    end = pos + 4
    if end > len(buf):
        raise _Miss
    return int.from_bytes(buf[pos:end], "big"), end


def _decode_only(v: object, out: bytearray) -> None:
    raise NotImplementedError("the fast walk only decodes")


def _seq(item: _Walk) -> _Walk:
    # SEQUENCE OF item, as the general walk reads it
    return seq(Codec(item, _decode_only)).dec


def _result_normal(buf: bytes, pos: int) -> tuple[_A.ResultNormal, int]:
    oad, pos = _u32(buf, pos)
    c, pos = _u8(buf, pos)
    if c == 1:
        data, pos = axdr.decode_data(buf, pos)
        return _A.ResultNormal(oad, data, None), pos
    if c == 0:
        dar, pos = _u8(buf, pos)
        return _A.ResultNormal(oad, None, dar), pos
    raise _Miss


def _result_record(buf: bytes, pos: int) -> tuple[_A.ResultRecord, int]:
    oad, pos = _u32(buf, pos)
    rcsd, pos = axdr.decode_typed(axdr.Tag.RCSD, buf, pos)
    c, pos = _u8(buf, pos)
    if c == 1:
        rows, pos = axdr.decode_rows(buf, pos, len(rcsd))
        return _A.ResultRecord(oad, rcsd, rows, None), pos
    if c == 0:
        dar, pos = _u8(buf, pos)
        return _A.ResultRecord(oad, rcsd, None, dar), pos
    raise _Miss


_results = _seq(_result_normal)
_records = _seq(_result_record)


def _proxy_result(buf: bytes, pos: int) -> tuple[_A.ProxyResult, int]:
    tsa, pos = axdr.decode_typed(axdr.Tag.TSA, buf, pos)
    res, pos = _results(buf, pos)
    return _A.ProxyResult(tsa, res), pos


_proxy_results = _seq(_proxy_result)


def _flag(buf: bytes, pos: int) -> tuple[int, int]:
    f, pos = _u8(buf, pos)
    if f > 1:
        raise _Miss
    return f, pos


def _follow(buf: bytes, pos: int) -> tuple[_A.FollowReport | None, int]:
    present, pos = _flag(buf, pos)
    if not present:
        return None, pos
    kind, pos = _u8(buf, pos)
    if kind == 1:
        res, pos = _results(buf, pos)
    elif kind == 2:
        res, pos = _records(buf, pos)
    else:
        raise _Miss
    return _A.FollowReport(kind, res), pos


def _time_tag(buf: bytes, pos: int) -> tuple[_A.TimeTag | None, int]:
    present, pos = _flag(buf, pos)
    if not present:
        return None, pos
    t, pos = axdr.decode_typed(axdr.Tag.DATE_TIME_S, buf, pos)
    ti, pos = axdr.decode_typed(axdr.Tag.TI, buf, pos)
    return _A.TimeTag(t, ti[0], ti[1]), pos


def _server(cls: Callable[..., Apdu], body: _Walk) -> _Walk:
    def dec(buf: bytes, pos: int) -> tuple[Apdu, int]:
        piid, pos = _u8(buf, pos)
        b, pos = body(buf, pos)
        fr, pos = _follow(buf, pos)
        tt, pos = _time_tag(buf, pos)
        return cls(piid, b, fr, tt), pos
    return dec


def _proxy_record(buf: bytes, pos: int) -> tuple[_A.ProxyGetResponseRecord, int]:
    piid, pos = _u8(buf, pos)
    tsa, pos = axdr.decode_typed(axdr.Tag.TSA, buf, pos)
    rec, pos = _result_record(buf, pos)
    fr, pos = _follow(buf, pos)
    tt, pos = _time_tag(buf, pos)
    return _A.ProxyGetResponseRecord(piid, tsa, rec, fr, tt), pos


def _link_request(buf: bytes, pos: int) -> tuple[_A.LinkRequest, int]:
    piid, pos = _u8(buf, pos)
    kind, pos = _u8(buf, pos)
    if pos + 2 > len(buf):
        raise _Miss
    hb = buf[pos] << 8 | buf[pos + 1]
    at, pos = axdr.decode_typed(axdr.Tag.DATE_TIME, buf, pos + 2)
    return _A.LinkRequest(piid, kind, hb, at), pos


_WALKS: dict[tuple[int, int | None], _Walk] = {}  # (tag, choice or None) -> dec(buf, pos)


def _init(A: ModuleType) -> None:
    global _A
    _WALKS.update({
        (0x01, None): _link_request,
        (0x85, 1): _server(A.GetResponseNormal, _result_normal),
        (0x85, 2): _server(A.GetResponseNormalList, _results),
        (0x85, 3): _server(A.GetResponseRecord, _result_record),
        (0x85, 4): _server(A.GetResponseRecordList, _records),
        (0x88, 1): _server(A.ReportNotificationList, _results),
        (0x88, 2): _server(A.ReportNotificationRecordList, _records),
        (0x89, 1): _server(A.ProxyGetResponseList, _proxy_results),
        (0x89, 2): _proxy_record,
    })
    _A = A


def decode(buf: bytes, classes: ModuleType) -> Apdu | None:
    """The APDU ``buf`` holds if it is one of the hot services and decodes whole, else None; built from
    the classes of ``classes`` (the module ``protocols.dlt698.apdu``)."""
    if classes is not _A:
        _init(classes)
    if len(buf) < 2:
        return None
    tag = buf[0]
    walk = _WALKS.get((tag, None) if tag == 0x01 else (tag, buf[1]))
    if walk is None:
        return None
    try:
        apdu, pos = walk(buf, 1 if tag == 0x01 else 2)
    except (_Miss, DecodeError, GridheadError):
        return None
    return apdu if pos == len(buf) else None


# decode_apdu(raw, lazy=True): the compiled module validates now and builds values on access; here
# the values are built now, which gives the same objects (the twin has no lazy sequence).
decode_lazy = decode
