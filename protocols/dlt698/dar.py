"""Data access results (数据访问结果 DAR) of DL/T 698.45 as named errors.

DL/T 698.45-2017 clause 7.3 (data type definitions), ``DAR ::= ENUMERATED``: a GET/SET/ACTION/PROXY
result carries a DAR where a value would be, 0 meaning success.  Every other value is a
:class:`~protocols.errors.DeviceError` subclass generated from the table below, so a caller can
``except ObjectUndefined:`` or look a code up with :func:`error_for`.  The DL/T 645 twin of this idea is
:mod:`protocols.dlt645.device_errors`.
"""

from __future__ import annotations

from ..errors import DeviceError

# (code, class name, English, 中文) — the standard's DAR table, in order
TABLE = [
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


DAR_ERRORS: dict[int, type[DarError]] = {}
NAMES: dict[int, str] = {}          # code -> English name, for JSON output
for _code, _cls, _en, _zh in TABLE:
    NAMES[_code] = _en
    if _code == 0:
        continue
    DAR_ERRORS[_code] = type(_cls, (DarError,), {
        "code": _code, "name": _en, "name_zh": _zh,
        "__doc__": f"DAR {_code}: {_en} ({_zh}).", "__module__": __name__,
    })
    globals()[_cls] = DAR_ERRORS[_code]
del _code, _cls, _en, _zh


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
