"""Data access results (数据访问结果 DAR) of DL/T 698.45 as named errors.

DL/T 698.45-2017 clause 7.3 (data type definitions), ``DAR ::= ENUMERATED``: a GET/SET/ACTION/PROXY
result carries a DAR where a value would be, 0 meaning success.  Every other value is a
:class:`~protocols.errors.DeviceError` subclass written out from the table below, so a caller can
``except ObjectUndefined:`` or look a code up with :func:`error_for`.  The DL/T 645 twin of this idea is
:mod:`protocols.dlt645.device_errors`.
"""

from __future__ import annotations

from ..errors import DeviceError

# (code, class name, English, 中文) — the standard's DAR table, in order
TABLE: list[tuple[int, str, str, str]] = [
    (0, "Success", "success", "成功"),
    (1, "HardwareFault", "hardware fault", "硬件失效"),
    (2, "TemporaryFailure", "temporary failure", "暂时失效"),
    (3, "ReadWriteDenied", "read/write denied", "拒绝读写"),
    (4, "ObjectUndefined", "object undefined", "对象未定义"),
    (5, "ObjectClassMismatch", "object interface class does not match", "对象接口类不符合"),
    (6, "ObjectUnavailable", "object does not exist", "对象不存在"),
    (7, "TypeMismatch", "type does not match", "类型不匹配"),
    (8, "OutOfRange", "out of range", "越界"),
    (9, "DataBlockUnavailable", "data block unavailable", "数据块不可用"),
    (10, "FragmentTransferCancelled", "fragmented transfer cancelled", "分帧传输已取消"),
    (11, "NotInFragmentTransfer", "not in a fragmented transfer", "不处于分帧传输状态"),
    (12, "BlockWriteCancelled", "block write cancelled", "块写取消"),
    (13, "NoBlockWrite", "no block write in progress", "不存在块写状态"),
    (14, "InvalidBlockNumber", "data block number invalid", "数据块序号无效"),
    (15, "Unauthorized", "password wrong or not authorized", "密码错/未授权"),
    (16, "BaudRateNotChangeable", "baud rate cannot be changed", "通信速率不能更改"),
    (17, "TooManyYearZones", "year time zone count exceeded", "年时区数超"),
    (18, "TooManyDayPeriods", "day period count exceeded", "日时段数超"),
    (19, "TooManyTariffs", "tariff count exceeded", "费率数超"),
    (20, "SecurityMismatch", "security authentication does not match", "安全认证不匹配"),
    (21, "DuplicateRecharge", "duplicate recharge", "重复充值"),
    (22, "EsamVerificationFailed", "ESAM verification failed", "ESAM验证失败"),
    (23, "SecurityAuthenticationFailed", "security authentication failed", "安全认证失败"),
    (24, "CustomerNumberMismatch", "customer number does not match", "客户编号不匹配"),
    (25, "RechargeCountError", "recharge count wrong", "充值次数错误"),
    (26, "PurchaseOverHoarding", "purchase exceeds the hoarding limit", "购电超囤积"),
    (27, "AddressAbnormal", "address abnormal", "地址异常"),
    (28, "SymmetricDecryptionError", "symmetric decryption error", "对称解密错误"),
    (29, "AsymmetricDecryptionError", "asymmetric decryption error", "非对称解密错误"),
    (30, "SignatureError", "signature error", "签名错误"),
    (31, "MeterSuspended", "meter suspended", "电能表挂起"),
    (32, "InvalidTimeTag", "time tag invalid", "时间标签无效"),
    (33, "RequestTimeout", "request timed out", "请求超时"),
    (34, "EsamP1P2Incorrect", "ESAM P1P2 incorrect", "ESAM的P1P2不正确"),
    (35, "EsamLcError", "ESAM LC wrong", "ESAM的LC错误"),
    (255, "OtherDar", "other", "其它"),
]


class DarError(DeviceError):
    """A non-zero DAR answered by a DL/T 698.45 device; ``code`` is the DAR value."""

    name_zh: str = ""


NAMES: dict[int, str] = {code: en for code, _, en, _ in TABLE}  # code -> English name, for JSON output


# One class per non-zero row of TABLE, written out so that readers and type checkers see every name
# (tests/protocols/test_typing.py checks each class against its row).
class HardwareFault(DarError):
    """DAR 1: hardware fault (硬件失效)."""

    code = 1
    name = "hardware fault"
    name_zh = "硬件失效"


class TemporaryFailure(DarError):
    """DAR 2: temporary failure (暂时失效)."""

    code = 2
    name = "temporary failure"
    name_zh = "暂时失效"


class ReadWriteDenied(DarError):
    """DAR 3: read/write denied (拒绝读写)."""

    code = 3
    name = "read/write denied"
    name_zh = "拒绝读写"


class ObjectUndefined(DarError):
    """DAR 4: object undefined (对象未定义)."""

    code = 4
    name = "object undefined"
    name_zh = "对象未定义"


class ObjectClassMismatch(DarError):
    """DAR 5: object interface class does not match (对象接口类不符合)."""

    code = 5
    name = "object interface class does not match"
    name_zh = "对象接口类不符合"


class ObjectUnavailable(DarError):
    """DAR 6: object does not exist (对象不存在)."""

    code = 6
    name = "object does not exist"
    name_zh = "对象不存在"


class TypeMismatch(DarError):
    """DAR 7: type does not match (类型不匹配)."""

    code = 7
    name = "type does not match"
    name_zh = "类型不匹配"


class OutOfRange(DarError):
    """DAR 8: out of range (越界)."""

    code = 8
    name = "out of range"
    name_zh = "越界"


class DataBlockUnavailable(DarError):
    """DAR 9: data block unavailable (数据块不可用)."""

    code = 9
    name = "data block unavailable"
    name_zh = "数据块不可用"


class FragmentTransferCancelled(DarError):
    """DAR 10: fragmented transfer cancelled (分帧传输已取消)."""

    code = 10
    name = "fragmented transfer cancelled"
    name_zh = "分帧传输已取消"


class NotInFragmentTransfer(DarError):
    """DAR 11: not in a fragmented transfer (不处于分帧传输状态)."""

    code = 11
    name = "not in a fragmented transfer"
    name_zh = "不处于分帧传输状态"


class BlockWriteCancelled(DarError):
    """DAR 12: block write cancelled (块写取消)."""

    code = 12
    name = "block write cancelled"
    name_zh = "块写取消"


class NoBlockWrite(DarError):
    """DAR 13: no block write in progress (不存在块写状态)."""

    code = 13
    name = "no block write in progress"
    name_zh = "不存在块写状态"


class InvalidBlockNumber(DarError):
    """DAR 14: data block number invalid (数据块序号无效)."""

    code = 14
    name = "data block number invalid"
    name_zh = "数据块序号无效"


class Unauthorized(DarError):
    """DAR 15: password wrong or not authorized (密码错/未授权)."""

    code = 15
    name = "password wrong or not authorized"
    name_zh = "密码错/未授权"


class BaudRateNotChangeable(DarError):
    """DAR 16: baud rate cannot be changed (通信速率不能更改)."""

    code = 16
    name = "baud rate cannot be changed"
    name_zh = "通信速率不能更改"


class TooManyYearZones(DarError):
    """DAR 17: year time zone count exceeded (年时区数超)."""

    code = 17
    name = "year time zone count exceeded"
    name_zh = "年时区数超"


class TooManyDayPeriods(DarError):
    """DAR 18: day period count exceeded (日时段数超)."""

    code = 18
    name = "day period count exceeded"
    name_zh = "日时段数超"


class TooManyTariffs(DarError):
    """DAR 19: tariff count exceeded (费率数超)."""

    code = 19
    name = "tariff count exceeded"
    name_zh = "费率数超"


class SecurityMismatch(DarError):
    """DAR 20: security authentication does not match (安全认证不匹配)."""

    code = 20
    name = "security authentication does not match"
    name_zh = "安全认证不匹配"


class DuplicateRecharge(DarError):
    """DAR 21: duplicate recharge (重复充值)."""

    code = 21
    name = "duplicate recharge"
    name_zh = "重复充值"


class EsamVerificationFailed(DarError):
    """DAR 22: ESAM verification failed (ESAM验证失败)."""

    code = 22
    name = "ESAM verification failed"
    name_zh = "ESAM验证失败"


class SecurityAuthenticationFailed(DarError):
    """DAR 23: security authentication failed (安全认证失败)."""

    code = 23
    name = "security authentication failed"
    name_zh = "安全认证失败"


class CustomerNumberMismatch(DarError):
    """DAR 24: customer number does not match (客户编号不匹配)."""

    code = 24
    name = "customer number does not match"
    name_zh = "客户编号不匹配"


class RechargeCountError(DarError):
    """DAR 25: recharge count wrong (充值次数错误)."""

    code = 25
    name = "recharge count wrong"
    name_zh = "充值次数错误"


class PurchaseOverHoarding(DarError):
    """DAR 26: purchase exceeds the hoarding limit (购电超囤积)."""

    code = 26
    name = "purchase exceeds the hoarding limit"
    name_zh = "购电超囤积"


class AddressAbnormal(DarError):
    """DAR 27: address abnormal (地址异常)."""

    code = 27
    name = "address abnormal"
    name_zh = "地址异常"


class SymmetricDecryptionError(DarError):
    """DAR 28: symmetric decryption error (对称解密错误)."""

    code = 28
    name = "symmetric decryption error"
    name_zh = "对称解密错误"


class AsymmetricDecryptionError(DarError):
    """DAR 29: asymmetric decryption error (非对称解密错误)."""

    code = 29
    name = "asymmetric decryption error"
    name_zh = "非对称解密错误"


class SignatureError(DarError):
    """DAR 30: signature error (签名错误)."""

    code = 30
    name = "signature error"
    name_zh = "签名错误"


class MeterSuspended(DarError):
    """DAR 31: meter suspended (电能表挂起)."""

    code = 31
    name = "meter suspended"
    name_zh = "电能表挂起"


class InvalidTimeTag(DarError):
    """DAR 32: time tag invalid (时间标签无效)."""

    code = 32
    name = "time tag invalid"
    name_zh = "时间标签无效"


class RequestTimeout(DarError):
    """DAR 33: request timed out (请求超时)."""

    code = 33
    name = "request timed out"
    name_zh = "请求超时"


class EsamP1P2Incorrect(DarError):
    """DAR 34: ESAM P1P2 incorrect (ESAM的P1P2不正确)."""

    code = 34
    name = "ESAM P1P2 incorrect"
    name_zh = "ESAM的P1P2不正确"


class EsamLcError(DarError):
    """DAR 35: ESAM LC wrong (ESAM的LC错误)."""

    code = 35
    name = "ESAM LC wrong"
    name_zh = "ESAM的LC错误"


class OtherDar(DarError):
    """DAR 255: other (其它)."""

    code = 255
    name = "other"
    name_zh = "其它"


DAR_ERRORS: dict[int, type[DarError]] = {cls.code: cls for cls in (
    HardwareFault, TemporaryFailure, ReadWriteDenied, ObjectUndefined, ObjectClassMismatch,
    ObjectUnavailable, TypeMismatch, OutOfRange, DataBlockUnavailable, FragmentTransferCancelled,
    NotInFragmentTransfer, BlockWriteCancelled, NoBlockWrite, InvalidBlockNumber, Unauthorized,
    BaudRateNotChangeable, TooManyYearZones, TooManyDayPeriods, TooManyTariffs, SecurityMismatch,
    DuplicateRecharge, EsamVerificationFailed, SecurityAuthenticationFailed, CustomerNumberMismatch,
    RechargeCountError, PurchaseOverHoarding, AddressAbnormal, SymmetricDecryptionError,
    AsymmetricDecryptionError, SignatureError, MeterSuspended, InvalidTimeTag, RequestTimeout,
    EsamP1P2Incorrect, EsamLcError, OtherDar,
)}


class ReservedDar(DarError):
    """A DAR value the standard reserves (36-254): kept, with its code."""

    name = "reserved DAR"
    name_zh = "保留"


def name_of(code: int) -> str:
    """The English name of DAR ``code`` (``"reserved"`` for values the standard leaves open)."""
    return NAMES.get(code, "reserved")


def error_for(code: int, where: str = "") -> DarError:
    """The exception for DAR ``code`` (non-zero), its message naming ``where`` (e.g. an OAD)."""
    cls = DAR_ERRORS.get(code, ReservedDar)
    what = f"{cls.name} ({cls.name_zh}, DAR {code})"
    return cls(f"{where}: {what}" if where else what, code=code)


def check(code: int, where: str = "") -> None:
    """Raise the DAR's error unless ``code`` is 0 (success)."""
    if code:
        raise error_for(code, where)
