"""Pure-Python twin of ``protocols._apdu698``: the A-XDR Data walk under every DL/T 698.45 APDU.

DL/T 698.45-2017 clause 7.3 / appendix A, ``Data ::= CHOICE``: one tag byte, then the type's content.
A value is the pair ``(tag, content)`` so that it re-encodes to the same bytes:

    0 null None          1 array / 2 structure: tuple of Data     3 bool: bool
    4 bit-string (nbits, bytes)   5 double-long 6 double-long-unsigned 15 integer 16 long 17 unsigned
    18 long-unsigned 20 long64 21 long64-unsigned 22 enum 80 OI 81 OAD 83 OMD: int
    9 octet-string, 85 TSA, 86 MAC, 87 RN: bytes      10 visible-string: str (latin-1), 12 UTF8-string: str
    23 float32, 24 float64: float (kept as the raw bit pattern if it would not survive a round trip)
    25 date_time (y, mo, d, wd, h, mi, s, ms)  26 date (y, mo, d, wd)  27 time (h, mi, s)
    28 date_time_s (y, mo, d, h, mi, s)   84 TI (unit, n)   89 Scaler_Unit (scaler, unit)
    82 ROAD (oad, (oad...))  91 CSD: oad or (oad, (oad...))  96 RCSD: tuple of CSD
    88 Region (kind, Data, Data)  92 MS (choice, tuple)  90 RSD (selector, ...)  93 SID (id, bytes)
    94 SID_MAC ((id, bytes), mac)  95 COMDCB (5 enums)

Errors are ``ValueError`` subclasses here (:class:`AxdrError`); callers turn them into protocol errors.
"""

from __future__ import annotations

import struct

_S = {n: struct.Struct(f) for n, f in [
    (5, ">i"), (6, ">I"), (15, ">b"), (16, ">h"), (17, ">B"), (18, ">H"), (20, ">q"), (21, ">Q"), (22, ">B"),
    (23, ">f"), (24, ">d"), (80, ">H"), (81, ">I"), (83, ">I"), (89, ">bB")]}
_FIXED = {5: 4, 6: 4, 15: 1, 16: 2, 17: 1, 18: 2, 20: 8, 21: 8, 22: 1, 23: 4, 24: 8, 80: 2, 81: 4, 83: 4}
_DT = struct.Struct(">HBBBBBBH")
_DTS = struct.Struct(">HBBBBB")
_DATE = struct.Struct(">HBBB")
_OCTETS = frozenset((9, 85, 86, 87))
MAX_DEPTH = 32


class AxdrError(ValueError):
    """Bytes that are not A-XDR Data (message names the offset)."""


def _short(pos):
    return AxdrError(f"Data truncated at offset {pos}")


def dec_len(buf, pos):
    if pos >= len(buf):
        raise _short(pos)
    n = buf[pos]
    if n < 0x80:
        return n, pos + 1
    k = n & 0x7F
    if k == 0 or k > 4:
        raise AxdrError(f"offset {pos}: length of length {k} (1-4)")
    end = pos + 1 + k
    if end > len(buf):
        raise _short(pos)
    v = int.from_bytes(buf[pos + 1:end], "big")
    if v < 0x80 or v >> (8 * (k - 1)) == 0:
        raise AxdrError(f"offset {pos}: length {v} in a non-minimal {k}-byte form")
    return v, end


def enc_len(n, out):
    if n < 0x80:
        out.append(n)
    else:
        b = n.to_bytes((n.bit_length() + 7) // 8, "big")
        if len(b) > 4:
            raise AxdrError(f"length {n} too large")
        out.append(0x80 | len(b))
        out += b


def _bytes(buf, pos):
    n, pos = dec_len(buf, pos)
    end = pos + n
    if end > len(buf):
        raise _short(pos)
    return bytes(buf[pos:end]), end


def _oads(buf, pos):
    n, pos = dec_len(buf, pos)
    end = pos + 4 * n
    if end > len(buf):
        raise _short(pos)
    return tuple(int.from_bytes(buf[p:p + 4], "big") for p in range(pos, end, 4)), end


def _csd(buf, pos):
    if pos >= len(buf):
        raise _short(pos)
    c = buf[pos]
    if pos + 5 > len(buf):
        raise _short(pos)
    oad = int.from_bytes(buf[pos + 1:pos + 5], "big")
    if c == 0:
        return oad, pos + 5
    if c == 1:
        subs, pos = _oads(buf, pos + 5)
        return (oad, subs), pos
    raise AxdrError(f"offset {pos}: CSD choice {c} (0 OAD or 1 ROAD)")


def _fixed(buf, pos, n):
    end = pos + n
    if end > len(buf):
        raise _short(pos)
    return end


def _ms(buf, pos, depth):
    if pos >= len(buf):
        raise _short(pos)
    c = buf[pos]
    pos += 1
    if c in (0, 1):
        return (c, ()), pos
    n, pos = dec_len(buf, pos)
    if n > len(buf) - pos:
        raise AxdrError(f"offset {pos}: {n} MS items announced")
    items = []
    for _ in range(n):
        if c == 2:
            _fixed(buf, pos, 1)
            items.append(buf[pos])
            pos += 1
        elif c == 3:
            b, pos = _bytes(buf, pos)
            items.append(b)
        elif c == 4:
            _fixed(buf, pos, 2)
            items.append(buf[pos] << 8 | buf[pos + 1])
            pos += 2
        elif c in (5, 6, 7):
            r, pos = _region(buf, pos, depth)
            items.append(r)
        else:
            raise AxdrError(f"offset {pos}: MS choice {c} (0-7)")
    return (c, tuple(items)), pos


def _region(buf, pos, depth):
    _fixed(buf, pos, 1)
    kind = buf[pos]
    a, pos = decode_data(buf, pos + 1, depth + 1)
    b, pos = decode_data(buf, pos, depth + 1)
    return (kind, a, b), pos


def decode_rsd(buf, pos, depth=0):
    """RSD ::= CHOICE of selectors 0-10 (7.3, 行选择描述符); returns ``(selector, *parameters)``."""
    if pos >= len(buf):
        raise _short(pos)
    s = buf[pos]
    pos += 1
    if s == 0:
        return (0,), pos
    if s == 1:
        _fixed(buf, pos, 4)
        oad = int.from_bytes(buf[pos:pos + 4], "big")
        v, pos = decode_data(buf, pos + 4, depth + 1)
        return (1, oad, v), pos
    if s == 2:
        return _sel2(buf, pos, depth)
    if s == 3:
        n, pos = dec_len(buf, pos)
        if n > len(buf) - pos:
            raise AxdrError(f"offset {pos}: {n} selectors announced")
        items = []
        for _ in range(n):
            x, pos = _sel2(buf, pos, depth)
            items.append(x[1:])
        return (3, tuple(items)), pos
    if s in (4, 5):
        end = _fixed(buf, pos, 7)
        t = _DTS.unpack_from(buf, pos)
        ms, pos = _ms(buf, end, depth)
        return (s, t, ms), pos
    if s in (6, 7, 8):
        end = _fixed(buf, pos, 17)
        a = _DTS.unpack_from(buf, pos)
        b = _DTS.unpack_from(buf, pos + 7)
        ti = (buf[pos + 14], buf[pos + 15] << 8 | buf[pos + 16])
        ms, pos = _ms(buf, end, depth)
        return (s, a, b, ti, ms), pos
    if s == 9:
        _fixed(buf, pos, 1)
        return (9, buf[pos]), pos + 1
    if s == 10:
        _fixed(buf, pos, 1)
        n = buf[pos]
        ms, pos = _ms(buf, pos + 1, depth)
        return (10, n, ms), pos
    raise AxdrError(f"offset {pos - 1}: RSD selector {s} (0-10)")


def _sel2(buf, pos, depth):
    _fixed(buf, pos, 4)
    oad = int.from_bytes(buf[pos:pos + 4], "big")
    a, pos = decode_data(buf, pos + 4, depth + 1)
    b, pos = decode_data(buf, pos, depth + 1)
    c, pos = decode_data(buf, pos, depth + 1)
    return (2, oad, a, b, c), pos


def decode_data(buf, pos, depth=0):
    """One Data at ``buf[pos]``; returns ``((tag, content), next_pos)``."""
    if pos >= len(buf):
        raise _short(pos)
    t = buf[pos]
    pos += 1
    n = _FIXED.get(t)
    if n is not None:
        end = pos + n
        if end > len(buf):
            raise _short(pos)
        v = _S[t].unpack_from(buf, pos)[0]
        if t == 23 or t == 24:
            if _S[t].pack(v) != buf[pos:end]:       # a NaN whose payload a float would not keep
                return (t, bytes(buf[pos:end])), end
        return (t, v), end
    if t == 1 or t == 2:
        if depth >= MAX_DEPTH:
            raise AxdrError(f"offset {pos - 1}: Data nested deeper than {MAX_DEPTH}")
        cnt, pos = dec_len(buf, pos)
        if cnt > len(buf) - pos:
            raise AxdrError(f"offset {pos}: {cnt} elements announced, {len(buf) - pos} bytes left")
        items = []
        for _ in range(cnt):
            v, pos = decode_data(buf, pos, depth + 1)
            items.append(v)
        return (t, tuple(items)), pos
    if t == 0:
        return (0, None), pos
    if t in _OCTETS:
        b, pos = _bytes(buf, pos)
        return (t, b), pos
    if t == 10:
        b, pos = _bytes(buf, pos)
        return (10, b.decode("latin-1")), pos
    if t == 12:
        b, end = _bytes(buf, pos)
        try:
            return (12, b.decode("utf-8")), end
        except UnicodeDecodeError:
            raise AxdrError(f"offset {pos}: UTF8-string is not UTF-8") from None
    if t == 3:
        end = _fixed(buf, pos, 1)
        if buf[pos] > 1:
            raise AxdrError(f"offset {pos}: bool {buf[pos]:#04x} (00 or 01)")
        return (3, buf[pos] == 1), end
    if t == 4:
        nbits, pos = dec_len(buf, pos)
        end = pos + (nbits + 7) // 8
        if end > len(buf):
            raise _short(pos)
        return (4, (nbits, bytes(buf[pos:end]))), end
    if t == 28:
        end = _fixed(buf, pos, 7)
        return (28, _DTS.unpack_from(buf, pos)), end
    if t == 25:
        end = _fixed(buf, pos, 10)
        return (25, _DT.unpack_from(buf, pos)), end
    if t == 26:
        end = _fixed(buf, pos, 5)
        return (26, _DATE.unpack_from(buf, pos)), end
    if t == 27:
        end = _fixed(buf, pos, 3)
        return (27, tuple(buf[pos:end])), end
    if t == 84:
        end = _fixed(buf, pos, 3)
        return (84, (buf[pos], buf[pos + 1] << 8 | buf[pos + 2])), end
    if t == 89:
        end = _fixed(buf, pos, 2)
        return (89, _S[89].unpack_from(buf, pos)), end
    if t == 95:
        end = _fixed(buf, pos, 5)
        return (95, tuple(buf[pos:end])), end
    if t == 82:
        end = _fixed(buf, pos, 4)
        subs, pos = _oads(buf, end)
        return (82, (int.from_bytes(buf[end - 4:end], "big"), subs)), pos
    if t == 91:
        v, pos = _csd(buf, pos)
        return (91, v), pos
    if t == 96:
        n, pos = dec_len(buf, pos)
        if n > len(buf) - pos:
            raise AxdrError(f"offset {pos}: {n} CSDs announced")
        cols = []
        for _ in range(n):
            c, pos = _csd(buf, pos)
            cols.append(c)
        return (96, tuple(cols)), pos
    if t == 88:
        r, pos = _region(buf, pos, depth)
        return (88, r), pos
    if t == 92:
        m, pos = _ms(buf, pos, depth)
        return (92, m), pos
    if t == 90:
        r, pos = decode_rsd(buf, pos, depth)
        return (90, r), pos
    if t == 93 or t == 94:
        end = _fixed(buf, pos, 4)
        ident = int.from_bytes(buf[pos:end], "big")
        extra, pos = _bytes(buf, end)
        if t == 93:
            return (93, (ident, extra)), pos
        mac, pos = _bytes(buf, pos)
        return (94, ((ident, extra), mac)), pos
    raise AxdrError(f"offset {pos - 1}: unknown Data type {t}")


def decode_rows(buf, pos, nrows, ncols):
    """``nrows`` A-RecordRows of ``ncols`` Data each: the hot loop of record reports."""
    rows = []
    for _ in range(nrows):
        row = []
        for _ in range(ncols):
            v, pos = decode_data(buf, pos)
            row.append(v)
        rows.append(tuple(row))
    return tuple(rows), pos


# --- encoding -------------------------------------------------------------------------------------------
def _enc_bytes(b, out):
    enc_len(len(b), out)
    out += b


def _enc_csd(v, out):
    if isinstance(v, int):
        out.append(0)
        out += v.to_bytes(4, "big")
    else:
        out.append(1)
        out += v[0].to_bytes(4, "big")
        enc_len(len(v[1]), out)
        for s in v[1]:
            out += s.to_bytes(4, "big")


def _enc_ms(v, out):
    c, items = v
    out.append(c)
    if c in (0, 1):
        return
    enc_len(len(items), out)
    for x in items:
        if c == 2:
            out.append(x)
        elif c == 3:
            _enc_bytes(x, out)
        elif c == 4:
            out += x.to_bytes(2, "big")
        else:
            _enc_region(x, out)


def _enc_region(v, out):
    out.append(v[0])
    encode_data(v[1], out)
    encode_data(v[2], out)


def encode_rsd(v, out):
    s = v[0]
    out.append(s)
    if s == 1:
        out += v[1].to_bytes(4, "big")
        encode_data(v[2], out)
    elif s == 2:
        out += v[1].to_bytes(4, "big")
        for d in v[2:5]:
            encode_data(d, out)
    elif s == 3:
        enc_len(len(v[1]), out)
        for oad, a, b, c in v[1]:
            out += oad.to_bytes(4, "big")
            encode_data(a, out)
            encode_data(b, out)
            encode_data(c, out)
    elif s in (4, 5):
        out += _DTS.pack(*v[1])
        _enc_ms(v[2], out)
    elif s in (6, 7, 8):
        out += _DTS.pack(*v[1])
        out += _DTS.pack(*v[2])
        out.append(v[3][0])
        out += v[3][1].to_bytes(2, "big")
        _enc_ms(v[4], out)
    elif s == 9:
        out.append(v[1])
    elif s == 10:
        out.append(v[1])
        _enc_ms(v[2], out)
    elif s != 0:
        raise AxdrError(f"RSD selector {s} (0-10)")


def encode_data(d, out):
    """Append Data ``d`` = (tag, content) to bytearray ``out``."""
    t, v = d
    out.append(t)
    st = _S.get(t)
    if st is not None and t != 89:
        if isinstance(v, bytes):         # a float kept as its bit pattern
            out += v
        else:
            out += st.pack(v)
    elif t == 1 or t == 2:
        enc_len(len(v), out)
        for x in v:
            encode_data(x, out)
    elif t == 0:
        if v is not None:
            raise AxdrError("null carries no value")
    elif t in _OCTETS:
        _enc_bytes(v, out)
    elif t == 10:
        _enc_bytes(v.encode("latin-1"), out)
    elif t == 12:
        _enc_bytes(v.encode("utf-8"), out)
    elif t == 3:
        out.append(1 if v else 0)
    elif t == 4:
        nbits, b = v
        if len(b) != (nbits + 7) // 8:
            raise AxdrError(f"bit-string of {nbits} bits needs {(nbits + 7) // 8} bytes, got {len(b)}")
        enc_len(nbits, out)
        out += b
    elif t == 28:
        out += _DTS.pack(*v)
    elif t == 25:
        out += _DT.pack(*v)
    elif t == 26:
        out += _DATE.pack(*v)
    elif t == 27 or t == 95:
        out += bytes(v)
    elif t == 84:
        out.append(v[0])
        out += v[1].to_bytes(2, "big")
    elif t == 89:
        out += _S[89].pack(*v)
    elif t == 82:
        out += v[0].to_bytes(4, "big")
        enc_len(len(v[1]), out)
        for s in v[1]:
            out += s.to_bytes(4, "big")
    elif t == 91:
        _enc_csd(v, out)
    elif t == 96:
        enc_len(len(v), out)
        for c in v:
            _enc_csd(c, out)
    elif t == 88:
        _enc_region(v, out)
    elif t == 92:
        _enc_ms(v, out)
    elif t == 90:
        encode_rsd(v, out)
    elif t == 93:
        out += v[0].to_bytes(4, "big")
        _enc_bytes(v[1], out)
    elif t == 94:
        out += v[0][0].to_bytes(4, "big")
        _enc_bytes(v[0][1], out)
        _enc_bytes(v[1], out)
    else:
        raise AxdrError(f"unknown Data type {t}")
