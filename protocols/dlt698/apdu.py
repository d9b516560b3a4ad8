"""DL/T 698.45 application layer: every APDU of clause 7, both directions, exact to the byte.

An APDU is one service tag, for most services a choice byte, the service's fields, then a trailer::

    client → server   tag [choice] PIID fields...            [TimeTag]                (7.2, Client-APDU)
    server → client   tag [choice] PIID-ACD fields... [FollowReport] [TimeTag]        (7.2, Server-APDU)
    LINK (01/81), SECURITY (10/90)   no trailer: they precede / wrap the application association

    tag  client service            tag  server service
    01   LINK-Request (terminal)   81   LINK-Response (master)           7.4.1 预连接
    02   CONNECT-Request           82   CONNECT-Response                 7.4.2 应用连接
    03   RELEASE-Request           83   RELEASE-Response, 84 -Notification  7.4.3 断开应用连接
    05   GET-Request  1..6         85   GET-Response  1..6              7.4.4 读取
    06   SET-Request  1..3         86   SET-Response  1..3              7.4.5 设置
    07   ACTION-Request 1..3       87   ACTION-Response 1..3            7.4.6 操作
    08   REPORT-Response 1..3      88   REPORT-Notification 1..3        7.4.7 上报
    09   PROXY-Request 1..7        89   PROXY-Response 1..7             7.4.8 代理
    10   SECURITY-Request          90   SECURITY-Response               7.4.9 安全传输
    6E   ERROR-Response (client)   EE   ERROR-Response (server)         7.2 异常响应

PIID (服务序号-优先级) = bit 7 priority, bits 0-5 service number; PIID-ACD adds bit 6 = "send the
follow report (跟随上报)".  FollowReport (跟随上报信息域) is ``CHOICE {1 SEQUENCE OF A-ResultNormal,
2 SEQUENCE OF A-ResultRecord}``; TimeTag (时间标签域) is ``date_time_s`` + ``TI`` allowed delay.

Every class is a frozen, slotted dataclass found through :data:`REGISTRY` keyed by (tag, choice);
``decode_apdu(raw)`` returns one, ``obj.to_bytes()`` gives the same bytes back.  Data values are
:class:`protocols.dlt698.axdr.Data` (tag, value).  OADs and OMDs are ``int`` (OI << 16 | attr << 8 | index).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self, TypeVar, dataclass_transform

from .. import accel
from ..errors import LocalProtocolError, RemoteProtocolError
from . import dar as _dar
from . import _codec as C
from . import axdr
from . import render
from ._codec import ABSENT  # noqa: F401 - re-exported: an OPTIONAL Data that is not there
from ._codec import (BOOL, COMDCB, DATA, DATE_TIME, DATE_TIME_S, DAR, OAD, OCTETS, OMD, OPT_DATA, RCSD, RSD,
                     TI, TSA, U8, U16, U32, VISIBLE, fixed, opt, seq)

if TYPE_CHECKING:
    from .._framing_py import Buffer

__all__ = [
    "Apdu", "REGISTRY", "decode_apdu", "encode_apdu", "TimeTag", "FollowReport", "ResultNormal",
    "ResultRecord", "GetRecord", "SecurityBackend",
]


# --- shared structures ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TimeTag:
    """时间标签域 (7.2): when the request was sent and how long it may travel (TI) before being refused."""

    sent_at: tuple[Any, ...]  # date_time_s: (year, month, day, hour, minute, second)
    delay_unit: int         # TI unit: 0 s, 1 min, 2 h, 3 d, 4 month, 5 year
    delay: int

    def to_json(self) -> dict[str, Any]:
        return {"sent_at": C.date_time_s_text(self.sent_at), "delay_unit": self.delay_unit, "delay": self.delay}


@dataclass(frozen=True, slots=True)
class ResultNormal:
    """A-ResultNormal: an OAD and its Get-Result, a Data or a DAR (``dar is None`` means data)."""

    oad: int
    data: Any = None
    dar: int | None = None

    def value(self) -> Any:
        """The data, or raise the DAR's named error."""
        if self.dar is not None:
            raise _dar.error_for(self.dar, f"OAD {self.oad:08X}")
        return self.data


@dataclass(frozen=True, slots=True)
class ResultRecord:
    """A-ResultRecord: record OAD, the columns (RCSD) and either rows (each a tuple of Data) or a DAR."""

    oad: int
    rcsd: tuple[Any, ...]
    rows: tuple[Any, ...] | None = None
    dar: int | None = None


@dataclass(frozen=True, slots=True)
class FollowReport:
    """跟随上报信息域: ``kind`` 1 = results are ResultNormal, 2 = ResultRecord."""

    kind: int
    results: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class GetRecord:
    """GetRecord: record OAD, row selector (RSD) and column selector (RCSD)."""

    oad: int
    rsd: Any
    rcsd: tuple[Any, ...]


# Get-Result ::= CHOICE {0 DAR, 1 Data} — decoded to (data, dar), one of them None
def _dec_get_result(buf: bytes, pos: int) -> tuple[tuple[axdr.Data | None, int | None], int]:
    if pos >= len(buf):
        raise C.short(pos)
    c = buf[pos]
    if c == 1:
        d, pos = C.dec_data(buf, pos + 1)
        return (d, None), pos
    if c == 0:
        if pos + 1 >= len(buf):
            raise C.short(pos + 1)
        return (None, buf[pos + 1]), pos + 2
    raise C.bad(pos, f"Get-Result choice {c} (0 DAR or 1 Data)")


def _enc_get_result(v: Any, out: bytearray) -> None:
    data, dar = v
    if dar is not None:
        out.append(0)
        out.append(dar)
    else:
        out.append(1)
        C.enc_data(data, out)


GET_RESULT = C.Codec(_dec_get_result, _enc_get_result, group=2)


def _dec_result_normal(buf: bytes, pos: int) -> tuple[ResultNormal, int]:
    oad, pos = OAD.dec(buf, pos)
    (d, r), pos = _dec_get_result(buf, pos)
    return ResultNormal(oad, d, r), pos


def _enc_result_normal(v: ResultNormal, out: bytearray) -> None:
    OAD.enc(v.oad, out)
    _enc_get_result((v.data, v.dar), out)


RESULT_NORMAL = C.Codec(_dec_result_normal, _enc_result_normal)


def _dec_result_record(buf: bytes, pos: int) -> tuple[ResultRecord, int]:
    oad, pos = OAD.dec(buf, pos)
    rcsd, pos = RCSD.dec(buf, pos)
    if pos >= len(buf):
        raise C.short(pos)
    c = buf[pos]
    pos += 1
    if c == 0:
        if pos >= len(buf):
            raise C.short(pos)
        return ResultRecord(oad, rcsd, None, buf[pos]), pos + 1
    if c != 1:
        raise C.bad(pos - 1, f"record result choice {c} (0 DAR or 1 rows)")
    # A-RecordRow has one Data per RCSD column and no count of its own (7.3, A-RecordRow)
    rows, pos = C.dec_rows(buf, pos, len(rcsd))
    return ResultRecord(oad, rcsd, rows, None), pos


def _enc_result_record(v: Any, out: bytearray) -> None:
    OAD.enc(v.oad, out)
    RCSD.enc(v.rcsd, out)
    if v.dar is not None:
        out.append(0)
        out.append(v.dar)
        return
    out.append(1)
    C.enc_len(len(v.rows), out)
    ncols = len(v.rcsd)
    for row in v.rows:
        if len(row) != ncols:
            raise LocalProtocolError(f"record row has {len(row)} cells for {ncols} RCSD columns")
        for cell in row:
            C.enc_data(cell, out)


RESULT_RECORD = C.Codec(_dec_result_record, _enc_result_record)


def _dec_follow(buf: bytes, pos: int) -> tuple[FollowReport, int]:
    if pos >= len(buf):
        raise C.short(pos)
    c = buf[pos]
    if c == 1:
        res, pos = seq(RESULT_NORMAL).dec(buf, pos + 1)
    elif c == 2:
        res, pos = seq(RESULT_RECORD).dec(buf, pos + 1)
    else:
        raise C.bad(pos, f"FollowReport choice {c} (1 results or 2 records)")
    return FollowReport(c, res), pos


def _enc_follow(v: FollowReport, out: bytearray) -> None:
    out.append(v.kind)
    (seq(RESULT_NORMAL) if v.kind == 1 else seq(RESULT_RECORD)).enc(v.results, out)


FOLLOW_REPORT = C.Codec(_dec_follow, _enc_follow)


def _dec_time_tag(buf: bytes, pos: int) -> tuple[TimeTag, int]:
    t, pos = DATE_TIME_S.dec(buf, pos)
    (u, n), pos = TI.dec(buf, pos)
    return TimeTag(t, u, n), pos


def _enc_time_tag(v: TimeTag, out: bytearray) -> None:
    DATE_TIME_S.enc(v.sent_at, out)
    TI.enc(axdr.TI(v.delay_unit, v.delay), out)


TIME_TAG = C.Codec(_dec_time_tag, _enc_time_tag)
OPT_FOLLOW = opt(FOLLOW_REPORT)
OPT_TIME_TAG = opt(TIME_TAG)


def _struct(cls: Any, spec: Iterable[C.Codec]) -> C.Codec:
    """A codec for the frozen dataclass ``cls`` whose fields are coded in order by ``spec``."""
    codecs = tuple(spec)

    def dec(buf: bytes, pos: int) -> tuple[Any, int]:
        vals: list[Any] = []
        for c in codecs:
            v, pos = c.dec(buf, pos)
            if c.group:
                vals.extend(v)
            else:
                vals.append(v)
        return cls(*vals), pos

    names = [f.name for f in dataclasses.fields(cls)]

    def enc(v: Any, out: bytearray) -> None:
        i = 0
        for c in codecs:
            if c.group:
                c.enc(tuple(getattr(v, n) for n in names[i:i + c.group]), out)
                i += c.group
            else:
                c.enc(getattr(v, names[i]), out)
                i += 1

    return C.Codec(dec, enc)


GET_RECORD = _struct(GetRecord, [OAD, RSD, RCSD])


# --- the APDU base and its registry --------------------------------------------------------------
REGISTRY: dict[tuple[int, int | None], type["Apdu"]] = {}


class Apdu:
    """Base of every APDU class.  Subclasses are frozen slotted dataclasses declared with :func:`_apdu`."""

    __slots__ = ()
    TAG: ClassVar[int]
    CHOICE: ClassVar[int | None]
    NAME: ClassVar[str]           # e.g. "GET-Response-Normal"
    SERVICE: ClassVar[str]        # e.g. "GET-Response"
    _BODY: ClassVar[C.Codec]
    _SPEC: ClassVar[tuple[C.Codec, ...]]  # the codecs of the fields, in order (trailer added by _apdu)
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]  # every subclass is a dataclass
    _TRAILER: ClassVar[str]       # "client", "server" or "" (LINK, SECURITY)

    @property
    def name(self) -> str:
        return self.NAME

    @classmethod
    def from_bytes(cls, raw: Buffer) -> Self:
        """Decode ``raw`` (exactly one APDU of this class)."""
        apdu = decode_apdu(raw)
        if not isinstance(apdu, cls):
            raise RemoteProtocolError(f"expected {cls.NAME}, got {apdu.NAME}")
        return apdu

    def to_bytes(self) -> bytes:
        out = bytearray((self.TAG,))
        if self.CHOICE is not None:
            out.append(self.CHOICE)
        self._BODY.enc(self, out)
        return bytes(out)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict: the APDU name, then each field (OADs named and values scaled)."""
        return render.apdu_json(_eager(self))

    @property
    def service_number(self) -> int | None:
        """Bits 0-5 of the PIID / PIID-ACD (None for SECURITY, which has none), to match a response to
        its request."""
        p = getattr(self, "piid", None)
        if p is None:
            p = getattr(self, "piid_acd", None)
        return None if p is None else p & 0x3F


_ApduT = TypeVar("_ApduT", bound="Apdu")


# type checkers read each APDU class like a frozen dataclass (PEP 681): its constructor from the fields
@dataclass_transform(frozen_default=True)
def _apdu(tag: int, choice: int | None, name: str, trailer: str) -> Callable[[type[_ApduT]], type[_ApduT]]:
    """Class decorator: make ``cls`` a frozen slotted dataclass, derive its codec, register it."""

    def wrap(cls: type[_ApduT]) -> type[_ApduT]:
        cls = dataclass(frozen=True, slots=True)(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        spec = list(cls._SPEC)
        if trailer == "client":
            spec.append(OPT_TIME_TAG)
        elif trailer == "server":
            spec += [OPT_FOLLOW, OPT_TIME_TAG]
        width = sum(c.group or 1 for c in spec)
        if width != len(names):
            raise TypeError(f"{cls.__name__}: {len(names)} fields but codecs for {width}")
        cls._BODY = _struct(cls, spec)
        cls.TAG, cls.CHOICE, cls.NAME, cls._TRAILER = tag, choice, name, trailer
        cls.SERVICE = "-".join(name.split("-")[:2])
        if (tag, choice) in REGISTRY:
            raise TypeError(f"APDU {tag:#04x}/{choice} registered twice")
        REGISTRY[(tag, choice)] = cls
        return cls

    return wrap


# --- 7.4.1 LINK (预连接): the terminal logs in, keeps alive, logs out -------------------------------
LINK_LOGIN, LINK_HEARTBEAT, LINK_LOGOUT = 0, 1, 2


@_apdu(0x01, None, "LINK-Request", "")
class LinkRequest(Apdu):
    """Terminal → master: type 0 login, 1 heartbeat, 2 logout; heartbeat period; the terminal's clock."""

    piid_acd: int
    type: int
    heartbeat_s: int
    requested_at: tuple[Any, ...]  # date_time (year, month, day, weekday, hour, minute, second, ms)
    _SPEC = (U8, U8, U16, DATE_TIME)


@_apdu(0x81, None, "LINK-Response", "")
class LinkResponse(Apdu):
    """Master → terminal: result (bit 7 clock trusted 时钟可信, bits 0-2 0 ok / 1 duplicate address /
    2 illegal device / 3 capacity full) and the request, receive and response times, from which the
    terminal estimates its clock error."""

    piid: int
    result: int
    requested_at: tuple[Any, ...]
    received_at: tuple[Any, ...]
    responded_at: tuple[Any, ...]
    _SPEC = (U8, U8, DATE_TIME, DATE_TIME, DATE_TIME)

    @property
    def clock_trusted(self) -> bool:
        return bool(self.result & 0x80)

    @property
    def outcome(self) -> int:
        return self.result & 0x07


# --- 7.4.2 CONNECT (应用连接) -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FactoryVersion:
    """厂商版本信息: fixed-size visible strings (4, 4, 6, 4, 6, 8 characters), no length prefix."""

    manufacturer: bytes
    software_version: bytes
    software_date: bytes
    hardware_version: bytes
    hardware_date: bytes
    extension: bytes


FACTORY_VERSION = _struct(FactoryVersion, [fixed(4), fixed(4), fixed(6), fixed(4), fixed(6), fixed(8)])


def _dec_mechanism(buf: bytes, pos: int) -> tuple[Any, int]:
    # ConnectMechanismInfo: 0 public (nothing), 1 password visible-string, 2 symmetric (octet-string ×2),
    # 3 signature (octet-string ×2)
    if pos >= len(buf):
        raise C.short(pos)
    c = buf[pos]
    pos += 1
    if c == 0:
        return (0, ()), pos
    if c == 1:
        s, pos = VISIBLE.dec(buf, pos)
        return (1, (s,)), pos
    if c in (2, 3):
        a, pos = OCTETS.dec(buf, pos)
        b, pos = OCTETS.dec(buf, pos)
        return (c, (a, b)), pos
    raise C.bad(pos - 1, f"ConnectMechanismInfo choice {c} (0-3)")


def _enc_mechanism(v: Any, out: bytearray) -> None:
    c, parts = v
    out.append(c)
    if c == 1:
        VISIBLE.enc(parts[0], out)
    elif c in (2, 3):
        OCTETS.enc(parts[0], out)
        OCTETS.enc(parts[1], out)
    elif c != 0:
        raise LocalProtocolError(f"ConnectMechanismInfo choice {c} (0-3)")


MECHANISM = C.Codec(_dec_mechanism, _enc_mechanism, group=2)
_CONNECT_LIMITS = (U16, fixed(8), fixed(16), U16, U16, U8, U16, U32)


@_apdu(0x02, None, "CONNECT-Request", "client")
class ConnectRequest(Apdu):
    """期望的协议版本, 协议/功能一致性块 (bit-strings of 64 and 128 bits), frame and APDU sizes, window,
    association timeout, and the authentication mechanism (0 public, 1 password, 2 symmetric, 3 signature)."""

    piid: int
    version: int = 0x0010
    protocol_conformance: bytes = bytes(8)
    function_conformance: bytes = bytes(16)
    send_frame_max: int = 1024
    receive_frame_max: int = 1024
    receive_window: int = 1
    apdu_max: int = 1024
    timeout_s: int = 100
    mechanism: int = 0
    mechanism_data: tuple[Any, ...] = ()
    time_tag: TimeTag | None = None
    _SPEC = (U8,) + _CONNECT_LIMITS + (MECHANISM,)


def _dec_connect_result(buf: bytes, pos: int) -> tuple[Any, int]:
    # ConnectResponseInfo: result enum + SecurityData OPTIONAL {RN server random, octet-string signature}
    r, pos = U8.dec(buf, pos)
    sd, pos = opt(C.pair(OCTETS, OCTETS)).dec(buf, pos)
    return (r, sd), pos


def _enc_connect_result(v: Any, out: bytearray) -> None:
    U8.enc(v[0], out)
    opt(C.pair(OCTETS, OCTETS)).enc(v[1], out)


@_apdu(0x82, None, "CONNECT-Response", "server")
class ConnectResponse(Apdu):
    """The server's factory version, the negotiated limits and the result (0 ok, 1 password wrong,
    2 symmetric decryption, 3 asymmetric decryption, 4 signature, 5 version mismatch, 255 other)."""

    piid_acd: int
    factory: FactoryVersion
    version: int
    protocol_conformance: bytes
    function_conformance: bytes
    send_frame_max: int
    receive_frame_max: int
    receive_window: int
    apdu_max: int
    timeout_s: int
    result: int
    security_data: tuple[Any, ...] | None = None
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, FACTORY_VERSION) + _CONNECT_LIMITS + (C.Codec(_dec_connect_result, _enc_connect_result, group=2),)


# --- 7.4.3 RELEASE (断开应用连接) -------------------------------------------------------------------
@_apdu(0x03, None, "RELEASE-Request", "client")
class ReleaseRequest(Apdu):
    piid: int
    time_tag: TimeTag | None = None
    _SPEC = (U8,)


@_apdu(0x83, None, "RELEASE-Response", "server")
class ReleaseResponse(Apdu):
    piid_acd: int
    result: int = 0
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, U8)


@_apdu(0x84, None, "RELEASE-Notification", "server")
class ReleaseNotification(Apdu):
    """The server ends the association itself: when it was established and the server's clock now."""

    piid_acd: int
    connected_at: tuple[Any, ...]
    server_time: tuple[Any, ...]
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, DATE_TIME_S, DATE_TIME_S)


# --- 7.4.4 GET (读取) -------------------------------------------------------------------------------
@_apdu(0x05, 1, "GET-Request-Normal", "client")
class GetRequestNormal(Apdu):
    piid: int
    oad: int
    time_tag: TimeTag | None = None
    _SPEC = (U8, OAD)


@_apdu(0x05, 2, "GET-Request-NormalList", "client")
class GetRequestNormalList(Apdu):
    piid: int
    oads: tuple[Any, ...]
    time_tag: TimeTag | None = None
    _SPEC = (U8, seq(OAD))


@_apdu(0x05, 3, "GET-Request-Record", "client")
class GetRequestRecord(Apdu):
    piid: int
    record: GetRecord
    time_tag: TimeTag | None = None
    _SPEC = (U8, GET_RECORD)


@_apdu(0x05, 4, "GET-Request-RecordList", "client")
class GetRequestRecordList(Apdu):
    piid: int
    records: tuple[Any, ...]
    time_tag: TimeTag | None = None
    _SPEC = (U8, seq(GET_RECORD))


@_apdu(0x05, 5, "GET-Request-Next", "client")
class GetRequestNext(Apdu):
    """Ask for the next block of a fragmented (分帧) GET-Response: the last block number received."""

    piid: int
    last_block: int
    time_tag: TimeTag | None = None
    _SPEC = (U8, U16)


@_apdu(0x05, 6, "GET-Request-MD5", "client")
class GetRequestMD5(Apdu):
    piid: int
    oad: int
    time_tag: TimeTag | None = None
    _SPEC = (U8, OAD)


@_apdu(0x85, 1, "GET-Response-Normal", "server")
class GetResponseNormal(Apdu):
    piid_acd: int
    result: ResultNormal
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, RESULT_NORMAL)


@_apdu(0x85, 2, "GET-Response-NormalList", "server")
class GetResponseNormalList(Apdu):
    piid_acd: int
    results: tuple[Any, ...]
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, seq(RESULT_NORMAL))


@_apdu(0x85, 3, "GET-Response-Record", "server")
class GetResponseRecord(Apdu):
    piid_acd: int
    result: ResultRecord
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, RESULT_RECORD)


@_apdu(0x85, 4, "GET-Response-RecordList", "server")
class GetResponseRecordList(Apdu):
    piid_acd: int
    results: tuple[Any, ...]
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, seq(RESULT_RECORD))


def _dec_next_block(buf: bytes, pos: int) -> tuple[Any, int]:
    # 分帧响应 CHOICE {0 DAR, 1 SEQUENCE OF A-ResultNormal, 2 SEQUENCE OF A-ResultRecord}
    if pos >= len(buf):
        raise C.short(pos)
    c = buf[pos]
    if c == 0:
        d, pos = DAR.dec(buf, pos + 1)
        return (0, d), pos
    if c == 1:
        r, pos = seq(RESULT_NORMAL).dec(buf, pos + 1)
        return (1, r), pos
    if c == 2:
        r, pos = seq(RESULT_RECORD).dec(buf, pos + 1)
        return (2, r), pos
    raise C.bad(pos, f"GET-Response-Next block choice {c} (0-2)")


def _enc_next_block(v: Any, out: bytearray) -> None:
    c, body = v
    out.append(c)
    if c == 0:
        DAR.enc(body, out)
    else:
        seq(RESULT_NORMAL if c == 1 else RESULT_RECORD).enc(body, out)


@_apdu(0x85, 5, "GET-Response-Next", "server")
class GetResponseNext(Apdu):
    """One block of a fragmented GET: last-block flag, block number, then a DAR (kind 0), results
    (kind 1) or records (kind 2)."""

    piid_acd: int
    last: bool
    block: int
    kind: int
    body: Any
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, BOOL, U16, C.Codec(_dec_next_block, _enc_next_block, group=2))


def _dec_md5(buf: bytes, pos: int) -> tuple[Any, int]:
    if pos >= len(buf):
        raise C.short(pos)
    c = buf[pos]
    if c == 0:
        d, pos = DAR.dec(buf, pos + 1)
        return (None, d), pos
    if c == 1:
        m, pos = OCTETS.dec(buf, pos + 1)
        return (m, None), pos
    raise C.bad(pos, f"MD5 result choice {c} (0 DAR or 1 octet-string)")


def _enc_md5(v: Any, out: bytearray) -> None:
    m, d = v
    if d is not None:
        out.append(0)
        DAR.enc(d, out)
    else:
        out.append(1)
        OCTETS.enc(m, out)


@_apdu(0x85, 6, "GET-Response-MD5", "server")
class GetResponseMD5(Apdu):
    piid_acd: int
    oad: int
    md5: bytes | None
    dar: int | None = None
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, OAD, C.Codec(_dec_md5, _enc_md5, group=2))


# --- 7.4.5 SET (设置) and 7.4.6 ACTION (操作) --------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SetItem:
    oad: int
    data: Any


@dataclass(frozen=True, slots=True)
class SetThenGetItem:
    """Set ``oad`` to ``data``, wait ``delay_s`` (延时读取时间), then read ``get_oad``."""

    oad: int
    data: Any
    get_oad: int
    delay_s: int


@dataclass(frozen=True, slots=True)
class SetResult:
    oad: int
    dar: int


@dataclass(frozen=True, slots=True)
class SetThenGetResult:
    oad: int
    dar: int
    get_oad: int
    data: Any = None
    get_dar: int | None = None


@dataclass(frozen=True, slots=True)
class ActionItem:
    omd: int
    data: Any


@dataclass(frozen=True, slots=True)
class ActionThenGetItem:
    omd: int
    data: Any
    get_oad: int
    delay_s: int


@dataclass(frozen=True, slots=True)
class ActionResult:
    """An OMD, its DAR and the optional data the method returned (操作返回数据)."""

    omd: int
    dar: int
    data: Any = C.ABSENT


@dataclass(frozen=True, slots=True)
class ActionThenGetResult:
    omd: int
    dar: int
    data: Any
    get_oad: int
    get_data: Any = None
    get_dar: int | None = None


SET_ITEM = _struct(SetItem, [OAD, DATA])
SET_THEN_GET_ITEM = _struct(SetThenGetItem, [OAD, DATA, OAD, U8])
SET_RESULT = _struct(SetResult, [OAD, DAR])
SET_THEN_GET_RESULT = _struct(SetThenGetResult, [OAD, DAR, OAD, GET_RESULT])
ACTION_ITEM = _struct(ActionItem, [OMD, DATA])
ACTION_THEN_GET_ITEM = _struct(ActionThenGetItem, [OMD, DATA, OAD, U8])
ACTION_RESULT = _struct(ActionResult, [OMD, DAR, OPT_DATA])
ACTION_THEN_GET_RESULT = _struct(ActionThenGetResult, [OMD, DAR, OPT_DATA, OAD, GET_RESULT])


@_apdu(0x06, 1, "SET-Request-Normal", "client")
class SetRequestNormal(Apdu):
    piid: int
    oad: int
    data: Any
    time_tag: TimeTag | None = None
    _SPEC = (U8, OAD, DATA)


@_apdu(0x06, 2, "SET-Request-NormalList", "client")
class SetRequestNormalList(Apdu):
    piid: int
    items: tuple[Any, ...]
    time_tag: TimeTag | None = None
    _SPEC = (U8, seq(SET_ITEM))


@_apdu(0x06, 3, "SET-Request-ThenGetNormalList", "client")
class SetThenGetRequestNormalList(Apdu):
    piid: int
    items: tuple[Any, ...]
    time_tag: TimeTag | None = None
    _SPEC = (U8, seq(SET_THEN_GET_ITEM))


@_apdu(0x86, 1, "SET-Response-Normal", "server")
class SetResponseNormal(Apdu):
    piid_acd: int
    oad: int
    dar: int
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, OAD, DAR)


@_apdu(0x86, 2, "SET-Response-NormalList", "server")
class SetResponseNormalList(Apdu):
    piid_acd: int
    results: tuple[Any, ...]
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, seq(SET_RESULT))


@_apdu(0x86, 3, "SET-Response-ThenGetNormalList", "server")
class SetThenGetResponseNormalList(Apdu):
    piid_acd: int
    results: tuple[Any, ...]
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, seq(SET_THEN_GET_RESULT))


@_apdu(0x07, 1, "ACTION-Request-Normal", "client")
class ActionRequestNormal(Apdu):
    piid: int
    omd: int
    data: Any
    time_tag: TimeTag | None = None
    _SPEC = (U8, OMD, DATA)


@_apdu(0x07, 2, "ACTION-Request-NormalList", "client")
class ActionRequestNormalList(Apdu):
    piid: int
    items: tuple[Any, ...]
    time_tag: TimeTag | None = None
    _SPEC = (U8, seq(ACTION_ITEM))


@_apdu(0x07, 3, "ACTION-Request-ThenGetNormalList", "client")
class ActionThenGetRequestNormalList(Apdu):
    piid: int
    items: tuple[Any, ...]
    time_tag: TimeTag | None = None
    _SPEC = (U8, seq(ACTION_THEN_GET_ITEM))


@_apdu(0x87, 1, "ACTION-Response-Normal", "server")
class ActionResponseNormal(Apdu):
    piid_acd: int
    omd: int
    dar: int
    data: Any = C.ABSENT
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, OMD, DAR, OPT_DATA)


@_apdu(0x87, 2, "ACTION-Response-NormalList", "server")
class ActionResponseNormalList(Apdu):
    piid_acd: int
    results: tuple[Any, ...]
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, seq(ACTION_RESULT))


@_apdu(0x87, 3, "ACTION-Response-ThenGetNormalList", "server")
class ActionThenGetResponseNormalList(Apdu):
    piid_acd: int
    results: tuple[Any, ...]
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, seq(ACTION_THEN_GET_RESULT))


# --- 7.4.7 REPORT (上报) ----------------------------------------------------------------------------
@_apdu(0x88, 1, "REPORT-Notification-List", "server")
class ReportNotificationList(Apdu):
    piid_acd: int
    results: tuple[Any, ...]
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, seq(RESULT_NORMAL))


@_apdu(0x88, 2, "REPORT-Notification-RecordList", "server")
class ReportNotificationRecordList(Apdu):
    piid_acd: int
    results: tuple[Any, ...]
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, seq(RESULT_RECORD))


@_apdu(0x88, 3, "REPORT-Notification-TransData", "server")
class ReportNotificationTransData(Apdu):
    """Raw frames a terminal forwards from a port (透明数据上报)."""

    piid_acd: int
    port: int
    frames: tuple[Any, ...]
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, OAD, seq(OCTETS))


@_apdu(0x08, 1, "REPORT-Response-List", "client")
class ReportResponseList(Apdu):
    piid: int
    oads: tuple[Any, ...]
    time_tag: TimeTag | None = None
    _SPEC = (U8, seq(OAD))


@_apdu(0x08, 2, "REPORT-Response-RecordList", "client")
class ReportResponseRecordList(Apdu):
    piid: int
    oads: tuple[Any, ...]
    time_tag: TimeTag | None = None
    _SPEC = (U8, seq(OAD))


@_apdu(0x08, 3, "REPORT-Response-TransData", "client")
class ReportResponseTransData(Apdu):
    """ReportResponseTransData ::= SEQUENCE {PIID}: transparent data is acknowledged by PIID alone."""

    piid: int
    time_tag: TimeTag | None = None
    _SPEC = (U8,)


# --- 7.4.8 PROXY (代理): a concentrator reads, sets, acts on the meters behind it --------------------
@dataclass(frozen=True, slots=True)
class ProxyTarget:
    """One meter (TSA) of a proxy list, its own timeout (代理一个服务器的超时时间) and its items: OADs
    (GetList), SetItem, SetThenGetItem, ActionItem or ActionThenGetItem."""

    tsa: bytes
    timeout_s: int
    items: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class ProxyResult:
    """One meter's answers: ResultNormal, SetResult, SetThenGetResult, ActionResult or ActionThenGetResult."""

    tsa: bytes
    results: tuple[Any, ...]


def _target(item: C.Codec) -> C.Codec:
    return _struct(ProxyTarget, [TSA, U16, seq(item)])


def _result(item: C.Codec) -> C.Codec:
    return _struct(ProxyResult, [TSA, seq(item)])


@_apdu(0x09, 1, "PROXY-Request-GetList", "client")
class ProxyGetRequestList(Apdu):
    piid: int
    timeout_s: int
    targets: tuple[Any, ...]
    time_tag: TimeTag | None = None
    _SPEC = (U8, U16, seq(_target(OAD)))


@_apdu(0x09, 2, "PROXY-Request-GetRecord", "client")
class ProxyGetRequestRecord(Apdu):
    piid: int
    timeout_s: int
    tsa: bytes
    record: GetRecord
    time_tag: TimeTag | None = None
    _SPEC = (U8, U16, TSA, GET_RECORD)


@_apdu(0x09, 3, "PROXY-Request-SetList", "client")
class ProxySetRequestList(Apdu):
    piid: int
    timeout_s: int
    targets: tuple[Any, ...]
    time_tag: TimeTag | None = None
    _SPEC = (U8, U16, seq(_target(SET_ITEM)))


@_apdu(0x09, 4, "PROXY-Request-SetThenGetList", "client")
class ProxySetThenGetRequestList(Apdu):
    piid: int
    timeout_s: int
    targets: tuple[Any, ...]
    time_tag: TimeTag | None = None
    _SPEC = (U8, U16, seq(_target(SET_THEN_GET_ITEM)))


@_apdu(0x09, 5, "PROXY-Request-ActionList", "client")
class ProxyActionRequestList(Apdu):
    piid: int
    timeout_s: int
    targets: tuple[Any, ...]
    time_tag: TimeTag | None = None
    _SPEC = (U8, U16, seq(_target(ACTION_ITEM)))


@_apdu(0x09, 6, "PROXY-Request-ActionThenGetList", "client")
class ProxyActionThenGetRequestList(Apdu):
    piid: int
    timeout_s: int
    targets: tuple[Any, ...]
    time_tag: TimeTag | None = None
    _SPEC = (U8, U16, seq(_target(ACTION_THEN_GET_ITEM)))


@_apdu(0x09, 7, "PROXY-Request-TransCommand", "client")
class ProxyTransCommandRequest(Apdu):
    """透明转发: send ``command`` (a raw 645 or 698 frame) out of ``port`` (e.g. F2010201 RS-485 port 1)
    with the serial settings ``comdcb`` (baud, parity, data bits, stop bits, flow control), waiting
    ``response_timeout_s`` for the answer and ``byte_timeout_ms`` between its bytes."""

    piid: int
    port: int
    comdcb: tuple[Any, ...]
    response_timeout_s: int
    byte_timeout_ms: int
    command: bytes
    time_tag: TimeTag | None = None
    _SPEC = (U8, OAD, COMDCB, U16, U16, OCTETS)


@_apdu(0x89, 1, "PROXY-Response-GetList", "server")
class ProxyGetResponseList(Apdu):
    piid_acd: int
    results: tuple[Any, ...]
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, seq(_result(RESULT_NORMAL)))


@_apdu(0x89, 2, "PROXY-Response-GetRecord", "server")
class ProxyGetResponseRecord(Apdu):
    piid_acd: int
    tsa: bytes
    result: ResultRecord
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, TSA, RESULT_RECORD)


@_apdu(0x89, 3, "PROXY-Response-SetList", "server")
class ProxySetResponseList(Apdu):
    piid_acd: int
    results: tuple[Any, ...]
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, seq(_result(SET_RESULT)))


@_apdu(0x89, 4, "PROXY-Response-SetThenGetList", "server")
class ProxySetThenGetResponseList(Apdu):
    piid_acd: int
    results: tuple[Any, ...]
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, seq(_result(SET_THEN_GET_RESULT)))


@_apdu(0x89, 5, "PROXY-Response-ActionList", "server")
class ProxyActionResponseList(Apdu):
    piid_acd: int
    results: tuple[Any, ...]
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, seq(_result(ACTION_RESULT)))


@_apdu(0x89, 6, "PROXY-Response-ActionThenGetList", "server")
class ProxyActionThenGetResponseList(Apdu):
    piid_acd: int
    results: tuple[Any, ...]
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, seq(_result(ACTION_THEN_GET_RESULT)))


@_apdu(0x89, 7, "PROXY-Response-TransCommand", "server")
class ProxyTransCommandResponse(Apdu):
    """The meter's raw answer to a transparent command, or the DAR of why there is none."""

    piid_acd: int
    port: int
    answer: bytes | None
    dar: int | None = None
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, OAD, C.Codec(_dec_md5, _enc_md5, group=2))


# --- 7.2 ERROR-Response (异常响应): 1 APDU cannot be parsed, 2 service not supported, 255 other -----
@_apdu(0x6E, None, "ERROR-Response-Client", "client")
class ClientErrorResponse(Apdu):
    piid: int
    error: int
    time_tag: TimeTag | None = None
    _SPEC = (U8, U8)


@_apdu(0xEE, None, "ERROR-Response", "server")
class ErrorResponse(Apdu):
    piid_acd: int
    error: int
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None
    _SPEC = (U8, U8)


# --- 7.4.9 SECURITY (安全传输): a wrapper around another APDU ------------------------------------------
class SecurityBackend(Protocol):
    """What a security module (ESAM, a key server...) must offer to open and seal ciphertext.

    gridhead has no built-in ESAM; a head-end plugs one in.  ``verification`` is the request's or
    response's 数据验证信息 as decoded here (kind, parts)."""

    def decrypt(self, ciphertext: bytes, verification: tuple[Any, ...]) -> bytes: ...

    def encrypt(self, plaintext: bytes) -> tuple[bytes, tuple[Any, ...]]: ...


def _dec_verify_req(buf: bytes, pos: int) -> tuple[Any, int]:
    # 数据验证信息 CHOICE {0 SID_MAC, 1 RN, 2 RN_MAC, 3 SID}; SID = 标识 double-long-unsigned + 附加数据
    if pos >= len(buf):
        raise C.short(pos)
    c = buf[pos]
    pos += 1
    if c == 0:
        sid, pos = C.SID.dec(buf, pos)
        mac, pos = OCTETS.dec(buf, pos)
        return (0, (sid, mac)), pos
    if c == 1:
        rn, pos = OCTETS.dec(buf, pos)
        return (1, (rn,)), pos
    if c == 2:
        rn, pos = OCTETS.dec(buf, pos)
        mac, pos = OCTETS.dec(buf, pos)
        return (2, (rn, mac)), pos
    if c == 3:
        sid, pos = C.SID.dec(buf, pos)
        return (3, (sid,)), pos
    raise C.bad(pos - 1, f"SECURITY-Request verification choice {c} (0-3)")


def _enc_verify_req(v: Any, out: bytearray) -> None:
    c, parts = v
    out.append(c)
    if c == 0:
        C.SID.enc(parts[0], out)
        OCTETS.enc(parts[1], out)
    elif c == 1:
        OCTETS.enc(parts[0], out)
    elif c == 2:
        OCTETS.enc(parts[0], out)
        OCTETS.enc(parts[1], out)
    elif c == 3:
        C.SID.enc(parts[0], out)
    else:
        raise LocalProtocolError(f"SECURITY-Request verification choice {c} (0-3)")


def _dec_sec_payload(buf: bytes, pos: int, allow_dar: bool) -> tuple[tuple[int, Any], int]:
    if pos >= len(buf):
        raise C.short(pos)
    c = buf[pos]
    if c in (0, 1):
        d, pos = OCTETS.dec(buf, pos + 1)
        return (c, d), pos
    if c == 2 and allow_dar:
        d, pos = DAR.dec(buf, pos + 1)
        return (2, d), pos
    raise C.bad(pos, f"security payload choice {c}")


def _enc_sec_payload(v: Any, out: bytearray) -> None:
    c, d = v
    out.append(c)
    (DAR if c == 2 else OCTETS).enc(d, out)


class _SecuredFields(Protocol):
    """What :class:`_Secured` reads from the SECURITY APDU it is mixed into."""

    NAME: ClassVar[str]

    @property
    def payload_kind(self) -> int: ...

    @property
    def payload(self) -> Any: ...

    @property
    def verification(self) -> tuple[Any, ...]: ...


class _Secured:
    __slots__ = ()

    @property
    def plaintext(self: _SecuredFields) -> bytes | None:
        """The wrapped APDU's bytes when sent in clear (明文), else None."""
        return self.payload if self.payload_kind == 0 else None

    @property
    def ciphertext(self: _SecuredFields) -> bytes | None:
        return self.payload if self.payload_kind == 1 else None

    def inner(self: _SecuredFields, backend: SecurityBackend | None = None) -> "Apdu":
        """The wrapped APDU; ciphertext needs a :class:`SecurityBackend`."""
        if self.payload_kind == 0:
            return decode_apdu(self.payload)
        if self.payload_kind == 1:
            if backend is None:
                raise LocalProtocolError(f"{self.NAME} carries ciphertext: a security backend is needed")
            return decode_apdu(backend.decrypt(self.payload, self.verification))
        raise _dar.error_for(self.payload, self.NAME)


@_apdu(0x10, None, "SECURITY-Request", "")
class SecurityRequest(_Secured, Apdu):
    """payload_kind 0 plaintext / 1 ciphertext; verification (0 SID_MAC, 1 RN, 2 RN_MAC, 3 SID, parts)."""

    payload_kind: int
    payload: bytes
    verification_kind: int
    verification_parts: tuple[Any, ...]
    _SPEC = (C.Codec(lambda b, p: _dec_sec_payload(b, p, False), _enc_sec_payload, group=2),
             C.Codec(_dec_verify_req, _enc_verify_req, group=2))

    @property
    def verification(self) -> tuple[Any, ...]:
        return (self.verification_kind, self.verification_parts)


@_apdu(0x90, None, "SECURITY-Response", "")
class SecurityResponse(_Secured, Apdu):
    """payload_kind 0 plaintext / 1 ciphertext / 2 DAR (异常错误); an optional MAC (数据验证信息 0 MAC)."""

    payload_kind: int
    payload: Any
    mac: bytes | None = None
    _SPEC = (C.Codec(lambda b, p: _dec_sec_payload(b, p, True), _enc_sec_payload, group=2), C.OPT_MAC_CHOICE)

    @property
    def verification(self) -> tuple[Any, ...]:
        return (0, (self.mac,)) if self.mac is not None else (None, ())


# --- entry points -----------------------------------------------------------------------------------
_CHOICE_TAGS = frozenset(t for (t, c) in REGISTRY if c is not None)


# the kernel, chosen once at import: the compiled _apdu698 unless GRIDHEAD_PUREPYTHON=1 or not built
if accel.PURE:
    from .. import _apdu698_py as _fast
else:
    try:
        # the stub _apdu698.pyi has the twin's signatures, but mypy cannot bind one name to either of
        # two modules: the name keeps the twin's type
        from .. import _apdu698 as _fast  # type: ignore[no-redef]
    except ImportError:
        from .. import _apdu698_py as _fast


_THIS = sys.modules[__name__]      # the walk builds this module's classes: it is given them with each call
render.PART_JSON.update({ResultNormal: render.result_normal_json, ResultRecord: render.result_record_json,
                         TimeTag: TimeTag.to_json, FollowReport: render.follow_report_json})


def decode_apdu(raw: Buffer, lazy: bool = False) -> Apdu:
    """Decode one whole APDU; a :class:`RemoteProtocolError` naming the byte offset if it is not one.

    ``lazy=True`` (opt-in) validates the whole APDU now, with every check and the same error as the
    eager decode, but leaves the bulk values unbuilt: the result lists of GET-Response-NormalList,
    REPORT-Notification-List and PROXY-Response-GetList, and the rows of every A-ResultRecord, are
    sequences that decode an item when it is read (held with a copy of ``raw`` as bytes).  The APDU,
    its PIID, TSAs, OADs, RCSDs and counts are built now; ==, hash, repr, to_bytes and to_json are
    the eager APDU's.  The pure twin decodes eagerly."""
    buf = raw if type(raw) is bytes else bytes(raw)
    # the services a head-end receives most (GET/REPORT/PROXY responses, LINK) in one compiled pass;
    # None for the others and for anything that does not decode whole: the walk below words the error
    apdu = (_fast.decode_lazy if lazy else _fast.decode)(buf, _THIS)
    if apdu is None and lazy:
        apdu = _fast.decode(buf, _THIS)  # noqa: F821
    return apdu if apdu is not None else _decode_general(buf)


def _eager(apdu: Apdu) -> Apdu:
    """``apdu`` with its lazy sequences (``decode_apdu(..., lazy=True)``) decoded: render needs tuples."""
    lazy = getattr(_fast, "LazySeq", None)  # noqa: F821 - only the compiled walk makes them
    if lazy is None:
        return apdu
    for f in dataclasses.fields(apdu):
        v = getattr(apdu, f.name)
        for x in (v if type(v) is tuple else (v,)):
            if isinstance(x, lazy) or isinstance(getattr(x, "rows" if isinstance(x, ResultRecord) else
                                                         "results", None), lazy):
                return decode_apdu(apdu.to_bytes())
    return apdu


def _decode_general(buf: bytes) -> Apdu:
    """decode_apdu by the registry's codecs alone (every service; the reference of the fast path)."""
    if not buf:
        raise RemoteProtocolError("APDU: empty")
    tag = buf[0]
    if tag in _CHOICE_TAGS:
        if len(buf) < 2:
            raise RemoteProtocolError(f"APDU {tag:#04x}: no service choice byte")
        cls = REGISTRY.get((tag, buf[1]))
        if cls is None:
            raise RemoteProtocolError(f"APDU {tag:#04x}: unknown service choice {buf[1]}")
        pos = 2
    else:
        cls = REGISTRY.get((tag, None))
        if cls is None:
            raise RemoteProtocolError(f"APDU: unknown service tag {tag:#04x}")
        pos = 1
    apdu: Apdu
    try:
        apdu, pos = cls._BODY.dec(buf, pos)
    except (C.DecodeError, RemoteProtocolError) as exc:    # both name the byte offset
        raise RemoteProtocolError(f"{cls.NAME}: {exc}") from None
    if pos != len(buf):
        raise RemoteProtocolError(f"{cls.NAME}: {len(buf) - pos} byte(s) left over after the APDU at offset {pos}")
    return apdu


def encode_apdu(apdu: Apdu) -> bytes:
    return apdu.to_bytes()


# --- constructors from intent --------------------------------------------------------------------------
def oad(oi: int, attribute: int = 2, index: int = 0) -> int:
    """OAD = OI, attribute (bits 0-4; bits 5-7 feature), element index (0 = all): 0x0010, 2 -> 00100200."""
    if not (0 <= oi <= 0xFFFF and 0 <= attribute <= 0xFF and 0 <= index <= 0xFF):
        raise LocalProtocolError(f"OAD parts out of range: OI {oi}, attribute {attribute}, index {index}")
    return oi << 16 | attribute << 8 | index


def omd(oi: int, method: int, mode: int = 0) -> int:
    """OMD = OI, method number, operation mode (0)."""
    return oad(oi, method, mode)


def parse_oad(text: str) -> int:
    """``"00100200"`` -> 0x00100200; a one-line error for anything but 8 hex digits."""
    t = text.strip().replace(" ", "")
    if len(t) != 8 or any(c not in "0123456789abcdefABCDEF" for c in t):
        raise LocalProtocolError(f"OAD {text!r}: 8 hex digits expected, e.g. 00100200")
    return int(t, 16)


def tsa(address: str | bytes, logical: int = 0) -> bytes:
    """A TSA for a single server address: AF (type 0 single, logical address, length-1) + the address
    bytes as they go on the wire (reading order reversed, DL/T 698.45 clause 5.3 address field)."""
    if isinstance(address, str):
        a = address.strip()
        if len(a) % 2 or not a or any(c not in "0123456789abcdefABCDEF" for c in a):
            raise LocalProtocolError(f"address {address!r}: an even number of hex digits expected")
        raw = bytes.fromhex(a)[::-1]
    else:
        raw = bytes(address)
    if not 1 <= len(raw) <= 16 or not 0 <= logical <= 3:
        raise LocalProtocolError(f"address of {len(raw)} bytes / logical {logical}: 1-16 bytes, logical 0-3")
    return bytes((logical << 4 | (len(raw) - 1),)) + raw


def get(oad_: int | str, piid: int = 1, *, time_tag: TimeTag | None = None) -> GetRequestNormal:
    """GET-Request-Normal for one OAD (int or ``"00100200"``)."""
    return GetRequestNormal(piid, parse_oad(oad_) if isinstance(oad_, str) else oad_, time_tag)


def get_list(oads: Iterable[int | str], piid: int = 1) -> GetRequestNormalList:
    return GetRequestNormalList(piid, tuple(parse_oad(o) if isinstance(o, str) else o for o in oads))


def get_record(oad_: int | str, rsd: Iterable[Any] = (0,), rcsd: Iterable[Any] = (), piid: int = 1, *,
               time_tag: TimeTag | None = None) -> GetRequestRecord:
    """GET-Request-Record: ``rsd`` an :class:`axdr.RSD`, e.g. ``(9, 1)`` = the last record (选择方法9,
    上第1次), ``(1, (0x20210200, Data(28, (2024, 6, 1, 0, 0, 0))))`` = the record frozen at that time;
    ``rcsd`` the columns (OADs, or :class:`axdr.Road` for a ROAD), () for all."""
    o = parse_oad(oad_) if isinstance(oad_, str) else oad_
    return GetRequestRecord(piid, GetRecord(o, tuple(rsd), tuple(rcsd)), time_tag)


def set_(oad_: int | str, data: axdr.Data, piid: int = 1) -> SetRequestNormal:
    return SetRequestNormal(piid, parse_oad(oad_) if isinstance(oad_, str) else oad_, data)


def action(omd_: int | str, data: axdr.Data | tuple[int, object] = (0, None), piid: int = 1, *,
           time_tag: TimeTag | None = None) -> ActionRequestNormal:
    """ACTION-Request-Normal, e.g. ``action(omd(0x8000, 129), trip_parameters)`` for a remote trip."""
    return ActionRequestNormal(piid, parse_oad(omd_) if isinstance(omd_, str) else omd_, data, time_tag)


def proxy_get_list(targets: Mapping[bytes, Iterable[int | str]] | Iterable[tuple[bytes, Iterable[int | str]]],
                   timeout_s: int = 60, piid: int = 1, per_meter_timeout_s: int = 30) -> ProxyGetRequestList:
    """PROXY-Request-GetList: ``targets`` maps each meter's TSA (bytes, see :func:`tsa`) to its OADs."""
    items = targets.items() if hasattr(targets, "items") else targets
    return ProxyGetRequestList(piid, timeout_s, tuple(
        ProxyTarget(t, per_meter_timeout_s, tuple(parse_oad(o) if isinstance(o, str) else o for o in oads))
        for t, oads in items))


def report_response(notification: Apdu) -> Apdu:
    """The REPORT-Response acknowledging a REPORT-Notification (same PIID, the OADs reported, 7.4.7)."""
    if not isinstance(notification, (ReportNotificationList, ReportNotificationRecordList,
                                     ReportNotificationTransData)):
        raise LocalProtocolError(f"{notification.NAME} is not a REPORT-Notification")
    p = notification.piid_acd & 0xBF           # a response carries PIID: drop the ACD bit
    if isinstance(notification, ReportNotificationList):
        return ReportResponseList(p, tuple(r.oad for r in notification.results))
    if isinstance(notification, ReportNotificationRecordList):
        return ReportResponseRecordList(p, tuple(r.oad for r in notification.results))
    return ReportResponseTransData(p)


def link_response(request: LinkRequest, received_at: tuple[int, ...], responded_at: tuple[int, ...], *,
                  clock_trusted: bool = True, outcome: int = 0) -> LinkResponse:
    """The master's LINK-Response to ``request``: result bit 7 = clock trusted, low bits the outcome."""
    return LinkResponse(request.piid_acd & 0xBF, (0x80 if clock_trusted else 0) | outcome,
                        request.requested_at, received_at, responded_at)
