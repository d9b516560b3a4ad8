"""Frames for people: hex text in, one JSON-ready dict per frame out (``gridhead frame decode``).

    parse_hex(["68 AA", "AA:AA"])  -> bytes (spaces, colons, commas, dashes and a 0x prefix allowed)
    sniff(data)                    -> "645" or "698": which protocol the first 68H starts
    decode_frames(data, "auto")    -> [dict, ...]: every frame found, noise between frames skipped

DL/T 645-2007: address (human order), function, direction, data identifier, values with units
(``protocols.dlt645``).  DL/T 698.45: server and client address, control word, direction, the APDU with
OADs named and values scaled (``protocols.dlt698.render`` through ``apdu.to_json``); a fragment's
APDU part as hex.  Bad hex, a damaged frame or no frame at all raise :class:`LocalProtocolError` or a
``FrameError`` — bad input, exit 2 at the command line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from .dlt645.frame import Framer as Framer645
from .dlt645.messages import decode_message as decode645
from .dlt698 import apdu as A
from .dlt698 import frame as F
from .errors import LocalProtocolError

_HEX_SEP = re.compile(r"[\s:,\-]+")
_HEX = re.compile(r"[0-9A-Fa-f]*")


def parse_hex(args: Iterable[str]) -> bytes:
    """Join hex arguments into bytes; a bad one is named with its position and why."""
    out = bytearray()
    for n, arg in enumerate(args, 1):
        s = _HEX_SEP.sub("", arg)
        if s.lower().startswith("0x"):
            s = s[2:]
        if len(s) % 2 or not _HEX.fullmatch(s):
            bad = next((c for c in s if c not in "0123456789abcdefABCDEF"), None)
            why = f"{bad!r} is not a hex digit" if bad else "odd number of hex digits"
            raise LocalProtocolError(f"argument {n} ({arg[:40]!r}): {why}")
        out += bytes.fromhex(s)
    return bytes(out)


def sniff(data: bytes) -> str:
    """645 if the first 68H has the second 68H of a DL/T 645 header seven bytes on (68 A0..A5 68),
    else 698 (68 L L C AF SA...: DL/T 698.45 clause 5.3)."""
    i = data.find(b"\x68")
    if i < 0 or (i + 7 < len(data) and data[i + 7] == 0x68) or len(data) - i < 8:
        return "645"
    return "698"


def decode_frames(data: bytes, protocol: str = "auto") -> list[dict[str, Any]]:
    """Every frame of ``protocol`` ("645", "698", or "auto": :func:`sniff`) in ``data``, described."""
    if protocol == "auto":
        protocol = sniff(data)
    if protocol == "645":
        return _each_frame645(data)
    if protocol == "698":
        return _each_frame698(data)
    raise LocalProtocolError(f"protocol {protocol!r}: auto, 645 or 698")


def _each_frame(framer: Any, data: bytes, render: Callable[[Any], dict[str, Any]]) -> list[dict[str, Any]]:
    """``render`` of every frame ``framer`` finds in ``data``; a damaged frame raises."""
    framer.feed(data)
    outs = []
    while (f := framer.next_frame()) is not None:
        outs.append(render(f))
    if outs:
        return outs
    left = framer.pending
    if left:
        raise LocalProtocolError(f"no complete frame: {left} byte(s) from offset {len(data) - left} start a "
                                 f"frame that is cut short")
    raise LocalProtocolError(f"no frame found in {len(data)} byte(s)")


def _each_frame645(data: bytes) -> list[dict[str, Any]]:
    def render(f: Any) -> dict[str, Any]:
        msg = decode645(f)
        return {"protocol": "DL/T 645-2007", "control": f"{f.control:02X}", **msg.to_json(),
                "raw": f.to_bytes(b"").hex(" ").upper()}

    return _each_frame(Framer645(), data, render)


def _each_frame698(data: bytes) -> list[dict[str, Any]]:
    def render(f: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "protocol": "DL/T 698.45",
            "server": {"address": f.server.address, "type": f.server.type.name.lower(), "logical": f.server.logical},
            "client": f.client, "control": f"{f.control:02X}",
            "direction": "server→client" if f.from_server else "client→server"}
        if f.fragment is not None:
            out["fragment"] = {"index": f.fragment[0], "type": F.FragmentType(f.fragment[1]).name.lower()}
            out["apdu_fragment"] = f.apdu.hex(" ").upper()
        else:
            out.update(A.decode_apdu(f.apdu).to_json())
        out["raw"] = f.to_bytes().hex(" ").upper()
        return out

    return _each_frame(F.Framer(), data, render)


__all__ = ["parse_hex", "sniff", "decode_frames"]
