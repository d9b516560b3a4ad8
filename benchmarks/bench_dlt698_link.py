"""DL/T 698.45 link layer: CRC-16/X.25 and framing, compiled kernel vs pure twin vs the PyPI ``dlt698`` peer.

    python benchmarks/bench_dlt698_link.py [--quick] [--json OUT]

(1) CRC-16/X.25 throughput in GB/s: ``protocols._framing698.crc16`` (slicing-by-8) vs the pure twin vs
    ``dlt698._native.crc16`` on the same random bytes.
(2) Framing on one seeded buffer of realistic head-end traffic, built with our encoder: LINK heartbeats
    and their responses, GET-Request/Response-Normal (energy 00100200, 5 × double-long-unsigned),
    GET-Response-NormalList (voltage, current, power), REPORT-Notification-RecordList from a
    concentrator (32 meters × daily frozen energy, ~1 KB), a few scrambled (SC) frames; four FEH before
    half the frames and line noise (no 68H) before some.  Measured in one process, best of N:
      (a) the kernel alone: ``scan698`` until NEED_MORE (find 68H, length, HCS, FCS, 16H);
      (b) ``Framer`` fed 1400-byte TCP segments, every frame a ``Frame`` object (addresses, control,
          fragment, APDU bytes) — compiled vs pure twin;
      (c) the peer: ``FrameStreamDecoder.feed`` over the same segments, and ``decode_frame`` on each
          frame's exact bytes (it takes one frame without preamble; the slices are cut before timing),
          against our ``decode_frame`` on the same slices.
It exits 1 if the implementations disagree: frame counts, or any frame whose fields differ between
compiled, pure and the peer.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import platform
import random
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmarks.bench_dlt645 import best_of  # noqa: E402  best wall time of N, gc off
from gridhead.protocols import _framing698_py, accel  # noqa: E402
from gridhead.protocols.dlt698.frame import Frame, Framer, ServerAddress, decode_frame  # noqa: E402

SEED = 698_45
SEGMENT = 1400
TARGETS = {"crc_gbps": 1.0}


# --- the traffic -----------------------------------------------------------------------------------
def _dt(rng):
    return bytes((0x07, 0xEA, rng.randrange(1, 13), rng.randrange(1, 29), rng.randrange(7), rng.randrange(24),
                  rng.randrange(60), rng.randrange(60), 0, 0))


def _apdu(rng: random.Random, kind: str) -> bytes:
    u32 = lambda: rng.randrange(1 << 32).to_bytes(4, "big")     # noqa: E731
    if kind == "link_req":        # LINK-Request heartbeat: 01 PIID-ACD type heartbeat date_time
        return bytes((0x01, rng.randrange(64), 1)) + (300).to_bytes(2, "big") + _dt(rng)
    if kind == "link_resp":
        return bytes((0x81, rng.randrange(64), 0x80)) + _dt(rng) + _dt(rng) + _dt(rng)
    if kind == "get_req":         # GET-Request-Normal 00100200
        return bytes((0x05, 0x01, rng.randrange(64), 0x00, 0x10, 0x02, 0x00, 0x00))
    if kind == "get_resp":        # GET-Response-Normal 00100200 = array(5) double-long-unsigned
        body = b"".join(b"\x06" + u32() for _ in range(5))
        return bytes((0x85, 0x01, rng.randrange(64), 0x00, 0x10, 0x02, 0x00, 0x01, 0x01, 0x05)) + body + b"\x00\x00"
    if kind == "get_list":        # GET-Response-NormalList: voltage(3), current(3), active power(4)
        out = bytearray((0x85, 0x02, rng.randrange(64), 0x03))
        for oi, n, tag, size in ((0x2000, 3, 0x12, 2), (0x2001, 3, 0x05, 4), (0x2004, 4, 0x05, 4)):
            out += oi.to_bytes(2, "big") + b"\x02\x00\x01\x01" + bytes((n,))
            for _ in range(n):
                out += bytes((tag,)) + rng.randrange(1 << (8 * size - 1)).to_bytes(size, "big")
        return bytes(out) + b"\x00\x00"
    # REPORT-Notification-RecordList: 32 meters × daily frozen forward active energy (total + 4 tariffs)
    out = bytearray((0x88, 0x02, rng.randrange(64), 0x01, 0x60, 0x12, 0x03, 0x00, 0x02,
                     0x00, 0x20, 0x2A, 0x02, 0x00, 0x01, 0x50, 0x04, 0x02, 0x00, 0x01, 0x00, 0x10, 0x02, 0x00,
                     0x01, 32))
    for _ in range(32):
        out += b"\x55\x07\x05" + bytes(rng.randrange(10) << 4 | rng.randrange(10) for _ in range(6))
        out += b"\x01\x01\x01\x05" + b"".join(b"\x06" + u32() for _ in range(5))
    return bytes(out) + b"\x00\x00"


MIX = [("link_req", 0x81, 0.10), ("link_resp", 0x01, 0.10), ("get_req", 0x43, 0.25), ("get_resp", 0xC3, 0.25),
       ("get_list", 0xC3, 0.15), ("report", 0x83, 0.15)]


def build_traffic(n: int, seed: int = SEED):
    """``(buffer, frames)``: n frames of the mix, deterministic for a seed."""
    rng = random.Random(seed)
    addrs = [f"{rng.randrange(10 ** 12):012d}" for _ in range(200)]
    kinds, weights = [(k, c) for k, c, _ in MIX], [w for *_, w in MIX]
    frames, parts = [], []
    for _ in range(n):
        kind, control = rng.choices(kinds, weights)[0]
        if rng.random() < 0.05:
            control |= 0x08                                       # SC: user data +33H
        f = Frame(ServerAddress(rng.choice(addrs)), rng.choice((0x00, 0x10, 0xA0)), control, _apdu(rng, kind))
        frames.append(f)
        if rng.random() < 0.05:
            parts.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9))).replace(b"\x68", b"\x00"))
        parts.append(f.to_bytes(b"\xFE" * 4 if rng.random() < 0.5 else b""))
    return b"".join(parts), frames


# --- what is timed ---------------------------------------------------------------------------------
def scan_count(k, buf: bytes) -> int:
    scan, pos, end, n, mx = k.scan698, 0, len(buf), 0, 0x3FFF + 2
    while True:
        status, start, stop, _ = scan(buf, pos, end, mx)
        if status == 0:
            n += 1
            pos = stop
        elif status == 1:
            return n
        else:
            pos = start + 1


def framer_frames(buf: bytes, keep=None) -> int:
    fr = Framer()
    feed, nxt, n = fr.feed, fr.next_frame, 0
    for i in range(0, len(buf), SEGMENT):
        feed(buf[i:i + SEGMENT])
        while (f := nxt()) is not None:
            n += 1
            if keep is not None:
                keep(f)
    return n


def ours_decode_each(slices) -> int:
    for s in slices:
        decode_frame(s)
    return len(slices)


def peer_stream(peer, buf: bytes, keep=None) -> int:
    d = peer.FrameStreamDecoder()
    n = 0
    for i in range(0, len(buf), SEGMENT):
        for f in d.feed(buf[i:i + SEGMENT]):
            n += 1
            if keep is not None:
                keep(f)
    return n


def peer_decode_each(peer, slices) -> int:
    dec = peer.decode_frame
    for s in slices:
        dec(s)
    return len(slices)


def _fields(f) -> tuple:
    """Comparable fields of our Frame or of the peer's (its payload = fragment header + APDU)."""
    if isinstance(f, Frame):
        return f.control, f.client, int(f.server.type), f.server.logical, bytes.fromhex(f.server.address)[::-1], \
            (f.fragment.to_bytes() if f.fragment else b"") + f.apdu
    return f.control, f.client, int(f.server.type), f.server.logical, f.server.bytes, f.payload


# --- main ------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10k frames, fewer repetitions (CI)")
    ap.add_argument("--json", metavar="OUT", help="write the figures as JSON")
    args = ap.parse_args(argv)

    n = 10_000 if args.quick else 100_000
    reps = 3 if args.quick else 7
    compiled = accel.is_compiled("gridhead.protocols._framing698") and os.environ.get("GRIDHEAD_PUREPYTHON", "") in ("", "0")
    try:
        import dlt698._native as peer
    except ImportError:
        peer = None

    buf, frames = build_traffic(n)
    slices = [f.to_bytes() for f in frames]
    print(f"DL/T 698.45 link benchmark: {n} frames, {len(buf) / 1e6:.2f} MB, seed {SEED}; "
          f"python {platform.python_version()}, {os.cpu_count()} cores, best of {reps}")
    failures, rows, crc = [], {}, {}

    # (1) CRC
    rng = random.Random(SEED)
    big = rng.randbytes(1 << (22 if args.quick else 26))
    small = big[:1 << (16 if args.quick else 18)]
    if compiled:
        from gridhead.protocols import _framing698
        crc["compiled"] = len(big) / best_of(reps, _framing698.crc16, big)[0] / 1e9
    crc["pure"] = len(small) / best_of(max(1, reps // 3), _framing698_py.crc16, small)[0] / 1e9
    if peer is not None:
        crc["dlt698"] = len(big) / best_of(reps, peer.crc16, big)[0] / 1e9
        want = peer.crc16(small)
        if _framing698_py.crc16(small) != want or (compiled and _framing698.crc16(small) != want):
            failures.append("CRC values differ between compiled, pure and the peer")

    # (2) framing
    if compiled:
        from gridhead.protocols import _framing698
        rows["a_scan_compiled"] = best_of(reps, scan_count, _framing698, buf)
    rows["a_scan_pure"] = best_of(max(1, reps // 3), scan_count, _framing698_py, buf)
    got: dict[str, list] = {}
    for mode in (["compiled"] if compiled else []) + ["pure"]:
        accel.use(mode)
        try:
            rows[f"b_framer_{mode}"] = best_of(reps if mode == "compiled" else max(1, reps // 3), framer_frames, buf)
            got[mode] = []
            framer_frames(buf, got[mode].append)
            if mode == "compiled" or not compiled:
                rows[f"c_ours_decode_frame_{mode}"] = best_of(reps, ours_decode_each, slices)
        finally:
            accel.use("auto")
        if got[mode] != frames:
            failures.append(f"{mode}: the Framer's frames differ from the encoded ones")
    if peer is not None:
        rows["c_peer_stream"] = best_of(reps, peer_stream, peer, buf)
        rows["c_peer_decode_frame"] = best_of(reps, peer_decode_each, peer, slices)
        theirs: list = []
        peer_stream(peer, buf, theirs.append)
        if [_fields(f) for f in theirs] != [_fields(f) for f in frames]:
            failures.append("the peer's stream decoder reads different frames")

    counts = {k: v[1] for k, v in rows.items()}
    if set(counts.values()) != {n}:
        failures.append(f"frame counts differ (generated {n}): {counts}")

    # --- report ------------------------------------------------------------------------------------
    print(f"\n{'CRC-16/X.25':40s} {'GB/s':>8s}")
    for k, v in crc.items():
        print(f"  {k:38s} {v:8.3f}")
    labels = [("a_scan_compiled", "(a) scan698 kernel, compiled"), ("a_scan_pure", "(a) scan698 kernel, pure twin"),
              ("b_framer_compiled", "(b) Framer -> Frame objects, compiled"),
              ("b_framer_pure", "(b) Framer -> Frame objects, pure twin"),
              ("c_peer_stream", "(c) dlt698 FrameStreamDecoder"),
              ("c_ours_decode_frame_compiled", "(c) our decode_frame per slice, compiled"),
              ("c_ours_decode_frame_pure", "(c) our decode_frame per slice, pure"),
              ("c_peer_decode_frame", "(c) dlt698 decode_frame per slice")]
    print(f"\n{'framing':48s} {'seconds':>8s} {'frames/s':>12s} {'µs/frame':>9s}")
    for key, label in labels:
        if key in rows:
            s = rows[key][0]
            print(f"  {label:46s} {s:8.3f} {n / s:12,.0f} {1e6 * s / n:9.3f}")
    ratios = {}
    fps = {k: n / v[0] for k, v in rows.items()}
    if compiled:
        ratios["crc compiled / pure"] = crc["compiled"] / crc["pure"]
        ratios["scan compiled / pure"] = fps["a_scan_compiled"] / fps["a_scan_pure"]
        ratios["Framer compiled / pure"] = fps["b_framer_compiled"] / fps["b_framer_pure"]
    best = "compiled" if compiled else "pure"
    if peer is not None:
        ratios[f"crc {best} / dlt698"] = crc[best] / crc["dlt698"]
        ratios[f"Framer {best} / dlt698 FrameStreamDecoder"] = fps[f"b_framer_{best}"] / fps["c_peer_stream"]
        ratios[f"decode_frame {best} / dlt698 decode_frame"] = fps[f"c_ours_decode_frame_{best}"] \
            / fps["c_peer_decode_frame"]
    print()
    for k, v in ratios.items():
        print(f"ratio {k:50s} {v:8.1f}x")
    got_crc = crc.get("compiled", crc["pure"])
    print(f"\n{'PASS' if got_crc >= TARGETS['crc_gbps'] else 'MISS'}  CRC {got_crc:.2f} GB/s "
          f"(target >= {TARGETS['crc_gbps']} GB/s compiled)")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({
            "date": dt.date.today().isoformat(), "frames": n, "bytes": len(buf), "quick": args.quick,
            "crc_gbps": crc, "seconds": {k: v[0] for k, v in rows.items()}, "ratios": ratios,
            "failures": failures}, indent=2))
    for f in failures:
        print("DISAGREE:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
