"""The DL/T 698.45 object registry against the standard's tables as the independent peer `dlt698` has them."""

from __future__ import annotations

import pytest

from gridhead.protocols.dlt698 import objects

native = pytest.importorskip("dlt698._native")


def _peer_objects():
    return {o.oi: o for o in native.objects()}


def test_units_agree_with_the_peer():
    for code, sym in objects.UNITS.items():
        theirs = native.unit_symbol(code)
        if theirs:
            assert theirs == sym, code


def test_every_shared_object_has_the_same_class_scaler_and_unit():
    peer = _peer_objects()
    shared = [oi for oi in peer if objects.lookup(oi) is not None]
    assert len(shared) >= 100, f"only {len(shared)} objects shared with the peer"
    problems = []
    for oi in shared:
        p, ours = peer[oi], objects.lookup(oi)
        if p.class_id != ours.class_id:
            problems.append(f"{oi:04X}: class {ours.class_id} vs peer {p.class_id}")
        for a in p.attributes:
            if a.scaling is None:
                continue
            mine = ours.attribute(a.number)
            if mine is None:
                problems.append(f"{oi:04X}.{a.number}: missing (peer scaler {a.scaling.scaler})")
                continue
            unit = objects.UNITS.get(a.scaling.unit, "")
            if (mine.scaler, mine.unit) != (a.scaling.scaler, unit) and not (a.scaling.scaler == 0 and mine.scaler is None):
                problems.append(f"{oi:04X}.{a.number}: {mine.scaler} {mine.unit!r} vs peer {a.scaling.scaler} {unit!r}")
    assert not problems, "\n".join(problems)


def test_names_agree_with_the_peer_in_chinese():
    peer = _peer_objects()
    differ = [(f"{oi:04X}", objects.lookup(oi).name_zh, p.name) for oi, p in peer.items()
              if objects.lookup(oi) is not None and objects.lookup(oi).name_zh.replace("事件", "") != p.name.replace("事件", "")]
    # event names: the peer says e.g. 电能表掉电事件 where the standard's table says 掉电; compare stems
    assert len(differ) <= len(peer) // 10, differ


@pytest.mark.parametrize("oad, expected", [
    ((0x0010, 2, 0), {"object": "forward_active_energy", "scaler": -2, "unit": "kWh"}),
    ((0x0010, 2, 3), {"element": "tariff_2"}),
    ((0x2000, 2, 1), {"object": "voltage", "scaler": -1, "unit": "V", "element": "a"}),
    ((0x200A, 2, 1), {"object": "power_factor", "scaler": -3, "element": "total"}),
    ((0x200F, 2, 0), {"object": "grid_frequency", "scaler": -2, "unit": "Hz"}),
    ((0x1010, 2, 0), {"object": "forward_active_max_demand", "scaler": -4, "unit": "kW"}),
    ((0x5004, 2, 0), {"object": "day_freeze", "attribute": "records"}),
    ((0x3011, 2, 0), {"object": "power_down_event"}),
])
def test_describe(oad, expected):
    d = objects.describe(*oad)
    assert expected.items() <= d.items(), d


def test_unknown_is_not_invented():
    assert objects.describe(0xEEEE, 2, 0) == {"oad": "EEEE0200"}
    assert objects.lookup(0xEEEE) is None and objects.attribute(0x0010, 9) is None
