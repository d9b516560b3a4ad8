"""Properties: compiled kernel == numpy twin to the fen; lines add up; energy scales; bad tariffs refused."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from gridhead.billing_core import _billing_py, energy, engine
from gridhead.billing_core.tariff import TariffSet
from gridhead.protocols import accel
from gridhead.protocols.errors import ConfigError

TARIFFS = TariffSet.load()
TABLE = TARIFFS.table()
N = st.integers(1, 40)


def _rows(seed, n):
    rng = np.random.default_rng(seed)
    days = rng.integers(1, 32, n)
    return engine.ChargeRows.of(
        n, tariff_row=rng.integers(0, len(TABLE.params), n), e_sharp=rng.integers(-10 ** 5, 10 ** 9, n),
        e_peak=rng.integers(0, 10 ** 9, n), e_flat=rng.integers(0, 10 ** 10, n), e_valley=rng.integers(0, 10 ** 9, n),
        q=rng.integers(0, 10 ** 10, n), cum_prev=rng.integers(0, 10 ** 7, n), demand=rng.integers(0, 10 ** 9, n),
        capacity_kva=rng.integers(0, 10 ** 5, n), contract_kw=rng.integers(0, 10 ** 5, n), days=days,
        period_days=np.maximum(days, 31))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), n=N)
def test_compiled_equals_twin(seed, n):
    if not accel.is_compiled("gridhead.billing_core._billing"):
        pytest.skip("compiled kernel not built")
    rows = _rows(seed, n)
    a = engine.price(rows, TABLE, accel.load("gridhead.billing_core._billing", "compiled"))
    b = engine.price(rows, TABLE, _billing_py)
    for k in engine.ITEMS:
        assert np.array_equal(a[k], b[k]), k


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), n=N)
def test_line_items_add_up(seed, n):
    items = engine.price(_rows(seed, n), TABLE)
    assert np.array_equal(sum(items[k] for k in engine.MONEY), items["total_fen"])
    for i in range(n):
        lines = engine.bill_lines(items, i, TABLE)
        assert sum(a for c, _, a in lines[:-1]) == lines[-1][2]


@settings(max_examples=60, deadline=None)
@given(prev=st.lists(st.integers(0, 10 ** 6), min_size=1, max_size=20), k=st.integers(1, 50),
       ct=st.integers(1, 400), data=st.data())
def test_scaling_readings_scales_energy(prev, k, ct, data):
    use = [data.draw(st.integers(0, 10 ** 6)) for _ in prev]
    now = [p + u for p, u in zip(prev, use)]
    e1, f1 = energy.register_energy(prev, now, ct, digits=10)
    ek, fk = energy.register_energy([p * k for p in prev], [x * k for x in now], ct, digits=10)
    assert np.array_equal(ek, e1 * k) and np.array_equal(f1, fk)


GOOD = (pathlib.Path(__file__).resolve().parents[2] / "billing_core" / "tariffs" / "large_industrial.toml").read_text()
BROKEN = [
    ("syntax", GOOD.replace('basic = "contract_demand"', 'basic = "contract_demand', 1), "(syntax)"),
    ("unknown key", GOOD.replace("pf_standard =", "pf_standrad =", 1), "version[0].pf_standrad: unknown key"),
    ("missing key", GOOD.replace('tiers = "none"\n', "", 1), "version[0].tiers: required key is missing"),
    ("bad choice", GOOD.replace('pf_standard = "0.90"', 'pf_standard = "0.95"', 1), "version[0].pf_standard"),
    # an array where a name is expected: refused like any other value (it raised TypeError: unhashable)
    ("choice not a string", GOOD.replace('pf_standard = "0.90"', 'pf_standard = ["0.90"]', 1),
     "version[0].pf_standard: ['0.90'] is not one of"),
    ("7 decimals", GOOD.replace('peak = "0.8767"', 'peak = "0.8767001"', 1), "prices.1-10kV.peak: '0.8767001' has more than 6"),
    ("negative", GOOD.replace('flat = "0.5845"', 'flat = "-0.5845"', 1), "prices.1-10kV.flat"),
    ("not a number", GOOD.replace('valley = "0.2923"', 'valley = "cheap"', 1), "prices.1-10kV.valley: not a decimal"),
    ("TOU order", GOOD.replace('valley = "0.2923"', 'valley = "0.9923"', 1), "TOU prices must not rise"),
    ("hours", GOOD.replace('"vvvvvvvvfppfffffpsspppff"', '"vvvvvvvvfppfffffpssppp"', 1), "season[0].weekday: must be 24"),
    ("months overlap", GOOD.replace("months = [7, 8]", "months = [6, 7, 8]", 1), "month 6 is already"),
    ("months missing", GOOD.replace("months = [7, 8]", "months = [7]", 1), "months [8] belong to no season"),
    ("dates", GOOD.replace("effective = 2026-07-01", "effective = 2025-07-01", 1), "version[1].effective: effective dates"),
    ("demand price", GOOD.replace('demand = "38.4"', "", 1), "demand: required by basic"),
    ("tiers", GOOD.replace('tiers = "none"', 'tiers = "monthly"\ntier_limits_kwh = [400, 240]\ntier_increments = [0.05, 0.3]', 1),
     "version[0].tier_limits_kwh"),
]


@pytest.mark.parametrize("kind,text,reason", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_tariff_refused_with_file_key_reason(tmp_path, kind, text, reason):
    path = tmp_path / "large_industrial.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        TariffSet.load(tmp_path)
    msg = str(exc.value)
    assert msg.startswith(str(path) + ": ") and reason in msg and "\n" not in msg, msg
