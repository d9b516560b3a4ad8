"""Collection tasks without a fleet: task files, the profile's requests on the wire, back-off, and the
collection state over a real lake and archive (gaps, success rate, attempts surviving a restart, the
``collection`` SQL view)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from gridhead.headend import collect as c
from gridhead.headend import profile as P
from gridhead.protocols.dlt645 import ReadResponse, decode_frames
from gridhead.protocols.dlt698 import apdu as A
from gridhead.storage import archive, collection, lake, schema
from gridhead.storage.sql import Session

D = dt.date(2026, 6, 2)


# --- task definitions ------------------------------------------------------------------------------------
def test_defaults_and_toml_override(tmp_path):
    f = tmp_path / "tasks.toml"
    f.write_text('[[task]]\nname = "daily-frozen"\nmethod = "proxy"\nbackfill_retries = 5\nstart = 2026-06-01\n'
                 '[[task]]\nname = "curve-60"\ntype = "curve"\nperiod = "60min"\nitems = ["00100200"]\n')
    tasks = {t.name: t for t in c.load_tasks(f)}
    d = tasks["daily-frozen"]
    assert (d.method, d.backfill_retries, d.start, d.items) == ("proxy", 5, dt.date(2026, 6, 1), P.ENERGY_OADS)
    assert tasks["curve-60"].period_s == 3600 and tasks["curve-60"].items == (0x00100200,)
    assert "monthly-settlement" in tasks
    assert [x.day for x in tasks["monthly-settlement"].days(dt.date(2026, 5, 20), dt.date(2026, 7, 2))] == [1, 1]


@pytest.mark.parametrize("body, words", [
    ('[[task]]\nname = "x"\ntype = "weekly"\n', "type 'weekly'"),
    ('[[task]]\nname = "x"\nperiod = "fortnight"\n', "not a duration"),
    ('[[task]]\nname = "x"\ncolour = 1\n', "unknown key 'colour'"),
    ('[[task]]\nname = "x"\nitems = ["0010"]\n', "items"),
    ('[[task]]\ntype = "daily"\n', "needs a name"),
    ('[[task]\n', "tasks.toml"),
])
def test_bad_task_file_is_one_line(tmp_path, body, words):
    f = tmp_path / "tasks.toml"
    f.write_text(body)
    with pytest.raises(c.TaskError) as e:
        c.load_tasks(f)
    assert words in str(e.value) and "\n" not in str(e.value)


# --- requests on the wire -------------------------------------------------------------------------------
def test_requests_round_trip_and_say_what_the_profile_says():
    a = A.decode_apdu(c.records_request(D).to_bytes())
    assert a.record.oad == P.OAD_TASK_RECORDS and a.record.rcsd == P.DAILY_RCSD
    assert a.record.rsd.selector == 7 and tuple(a.record.rsd.value.start)[:4] == (2026, 6, 2, 0)
    assert tuple(a.record.rsd.value.end)[:3] == (2026, 6, 3)
    rec = c.freeze_record(c.DEFAULT_TASKS[0], D)          # what every link asks a 698 meter (a terminal: by proxy)
    b = A.decode_apdu(A.ProxyGetRequestRecord(1, 5, A.tsa("000000000017"), rec).to_bytes())
    assert b.tsa == A.tsa("000000000017") and b.record.oad == P.OAD_DAY_FREEZE
    assert b.record.rcsd == P.DAILY_METER_RCSD and b.record.rsd.value.oad == P.OAD_FREEZE_TIME
    # 上 n 次日冻结 (DL/T 645-2007): 上1次 is the most recent freeze, so D read 3 days later is 上4次
    dis = c.reads_645(c.DEFAULT_TASKS[0], D, D + dt.timedelta(days=3))
    assert dis[:2] == ((P.DI645_DAILY_TIME & ~0xFF) | 4, (P.DI645_DAILY_FWD & ~0xFF) | 4)
    assert {di & 0xFF for di in dis} == {4} and len(dis) == 1 + len(c.items_645(c.DEFAULT_TASKS[0]))
    reqs = [c.proxy_645_read("000000000003", di, P.PORT_CARRIER) for di in dis]   # a terminal forwards them
    assert [decode_frames(A.decode_apdu(r.to_bytes()).command)[0].di for r in reqs] == list(dis)
    assert {A.decode_apdu(r.to_bytes()).port for r in reqs} == {P.PORT_CARRIER}
    assert c.reads_645(c.DEFAULT_TASKS[0], D, D + dt.timedelta(days=70)) is None
    # a monthly task's 上 n 结算日: June's settlement read in August is 上3
    assert {di & 0xFF for di in c.reads_645(c.DEFAULT_TASKS[1], D.replace(day=1), dt.date(2026, 8, 5))} == {3}
    assert c.reads_645(c.DEFAULT_TASKS[1], D.replace(day=1), dt.date(2027, 7, 1)) is None      # 上14: not kept


@pytest.mark.parametrize("back, n", [(0, 1), (1, 2), (61, 62), (62, None), (-1, None)])
def test_645_day_numbering_pins_n(back, n):
    """n = (today − D) + 1: today's freeze is 上1次, the 62nd freeze kept is D = today − 61."""
    today = D + dt.timedelta(days=back)
    dis = c.reads_645(c.DEFAULT_TASKS[0], D, today)
    if n is None:
        assert dis is None
    else:
        assert c.days_back_645(D, today) == n
        assert dis[1] == (P.DI645_DAILY_FWD & ~0xFF) | n


def test_port_of_archive_port_oad():
    assert c.port_of("F2090201") == P.PORT_CARRIER and c.port_of(None) == P.PORT_RS485_1
    with pytest.raises(c.TaskError):
        c.port_of("F209")


def test_645_answers_become_a_batch_only_for_the_right_day():
    from gridhead.headend import records

    def answer(di, values):                  # (di, raw values): what a link's read645 gives
        msg = ReadResponse.of("000000000003", di, values)
        return msg.di, records.raw_values_645(msg.values)
    t_ok = answer(0x05060003, [dt.datetime(2026, 6, 2, 0, 0)])
    t_other = answer(0x05060003, [dt.datetime(2026, 6, 1, 0, 0)])
    fwd = answer(0x05060103, [123456, 1, 2, 3, 123450])
    b = c.answers_645_batch(3, D, t_ok, [fwd], quality=schema.Q_BACKFILLED)
    assert b.columns["value"].tolist() == [123456, 1, 2, 3, 123450]
    assert set(b.columns["ts_utc"].tolist()) == {int(dt.datetime(2026, 6, 2, tzinfo=schema.LOCAL_TZ).timestamp())}
    assert set(b.columns["quality"].tolist()) == {schema.Q_BACKFILLED}
    assert len(c.answers_645_batch(3, D, t_other, [fwd])) == 0 and c.answers_645_batch(3, D, t_other, [fwd]).missing
    assert len(c.answers_645_batch(3, D, t_ok, [None])) == 0          # the meter answered no item


def test_backoff_grows_spreads_and_is_seeded():
    t = c.Task("x", backfill_delay_s=10)
    a = [c.backoff_s(t, k, 7, D, seed=1) for k in range(4)]
    assert all(10 * 2 ** k <= v < 20 * 2 ** k for k, v in enumerate(a))
    assert a == [c.backoff_s(t, k, 7, D, seed=1) for k in range(4)]
    spread = {round(c.backoff_s(t, 0, m, D, seed=1), 6) for m in range(100)}
    assert len(spread) == 100
    assert c.backoff_s(t, 0, 7, D, seed=2) != a[0]


# --- collection state over a real lake and archive --------------------------------------------------------
def _midnight(d):
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=schema.LOCAL_TZ).timestamp())


@pytest.fixture
def data(tmp_path):
    from gridhead.headend.sim import model as sim_model
    sim_model.write_standalone_archive(tmp_path, 3, 4, 5, dt.date(2026, 6, 1))
    with archive.Archive(tmp_path / "archive.duckdb") as a:
        a.import_files(sorted((tmp_path / "archive-files").glob("*.csv")))
        exp = collection.expected_meters(a)
    return tmp_path, exp


def _store(root, meters, day, quality=0):
    m = np.asarray(meters, np.int64)
    lake.write_readings(root, {"meter_id": m, "register": np.full(len(m), 1, np.int16),
                               "ts_utc": np.full(len(m), _midnight(day)), "value": m * 100,
                               "quality": np.full(len(m), quality, np.uint8),
                               "source": np.full(len(m), schema.SRC_TASK, np.uint8),
                               "received_utc": np.full(len(m), _midnight(day) + 600)}, "daily")


def test_gaps_success_and_state_survive_a_new_process(data):
    root, exp = data
    lk = root / "lake"
    days = [D, D + dt.timedelta(days=1)]
    st = collection.CollectionState(lk, exp)
    want = st.expected_count(days)
    ids = sorted(set(exp.column("meter_id").to_pylist()))
    assert want >= 2 * 10
    assert st.gaps(days, "daily-frozen").num_rows == want           # nothing stored yet
    first = ids[:8]
    _store(lk, first, D)
    st.record_run("daily-frozen", D, "collect", 1, 2, want // 2, 8 * 8)
    g = st.gaps(days, "daily-frozen").to_pydict()
    assert not set(first) & {m for m, d in zip(g["meter_id"], g["date"]) if d == D}
    st.record_attempts("daily-frozen", D, g["meter_id"][:3], collection.NO_ANSWER, at_utc=1000)
    _store(lk, g["meter_id"][:2], D, schema.Q_BACKFILLED)
    st.close()
    # a new process: everything comes back from disk
    st = collection.CollectionState(lk, exp)
    assert st.days("daily-frozen", "collect") == [D]
    g2 = st.gaps(days, "daily-frozen").to_pydict()
    tried = {m: n for m, n, d in zip(g2["meter_id"], g2["attempts"], g2["date"]) if d == D and n}
    assert tried == {g["meter_id"][2]: 1}
    s = st.success([D], "day").to_pylist()[0]
    n_day = st.expected_count([D])
    assert (s["expected"], s["first_pass"], s["backfilled"], s["collected"]) == (n_day, 8, 2, 10)
    assert float(s["success_first_pct"]) == round(100 * 8 / n_day, 2)
    assert float(s["success_pct"]) == round(100 * 10 / n_day, 2)
    by_t = st.success([D], "terminal").to_pydict()
    assert sum(by_t["collected"]) == 10 and len(by_t["terminal_address"]) == 3
    # the same numbers in `gridhead sql`'s collection view
    with Session(root) as s2:
        v = s2.query("SELECT sum(expected) e, sum(first_pass) f, sum(backfilled) b FROM collection "
                     "WHERE date = DATE '2026-06-02'").to_pylist()[0]
    assert (v["e"], v["f"], v["b"]) == (n_day, 8, 2)


def test_replaced_meter_expected_until_its_removal_day(data):
    root, exp = data
    st = collection.CollectionState(root / "lake", exp)
    d = exp.to_pydict()
    on = set(st.gaps([D], "t").column("meter_id").to_pylist())
    for m, inst, rem in zip(d["meter_id"], d["installed"], d["removed"]):
        assert (m in on) == ((inst is None or inst < D) and (rem is None or D <= rem))


def test_columnar_request_gets_lake_columns_equal_to_the_general_path():
    """A request sent ``columnar`` has its record answer decoded straight into columns (the session's
    response_decoder, as HeadEnd.decode_response does it); the same answer to an ordinary request is the
    APDU, and both give the same lake columns."""
    from gridhead.headend import records
    from gridhead.headend.sim import model as sim_model, simulator
    from gridhead.protocols.dlt698 import session as S
    from gridhead.protocols.dlt698.frame import ServerAddress

    fleet = sim_model.standalone(2, 12, 3, dt.date(2026, 6, 1))
    sim = simulator.Simulator(fleet, seed=3, connect=("127.0.0.1", 1), start=dt.datetime(2026, 6, 5, 10, 0))
    term = sim.terminals[0]
    mot = {A.tsa(a): int(fleet.meter_id[i]) for i, a in enumerate(fleet.address)}

    def decoder(apdu):
        fast = records.decode_record_answer(apdu, mot, source=schema.SRC_TASK, received_utc=7)
        if fast is None:
            return None
        oad, rcsd, dar, _b = fast.results[0]
        return A.GetResponseRecord(fast.piid_acd, A.ResultRecord(oad, rcsd, None, dar)), fast

    got = {}
    for columnar in (True, False):
        sess = S.ClientSession(ServerAddress(term.address), response_decoder=decoder)
        sess.send(c.records_request(D), dt.datetime(2026, 6, 5, 10, 0), columnar=columnar)
        req = sess.last_request
        rsp = sim.respond(term, req)
        sess.receive_data(sim._frame(term, 0xC3, rsp, 0x10), dt.datetime(2026, 6, 5, 10, 0, 1))
        ev = sess.next_event()
        assert isinstance(ev, S.Response) and ev.request is req
        if columnar:
            assert isinstance(ev.decoded, records.RecordAnswer)
            got[columnar] = ev.decoded.results[0][3]
        else:
            assert ev.decoded is None and len(ev.response.result.rows) == len(term.meters)
            got[columnar] = records.result_to_batch(ev.response.result, mot, source=schema.SRC_TASK, received_utc=7)
    a, b = got[True].columns, got[False].columns
    assert sorted(a) == sorted(b) and len(a["meter_id"]) >= 6 * len(term.meters)     # 6 or 8 registers each
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_a_day_that_has_not_begun_is_refused_and_records_nothing(data, capsys):
    """Asking to collect tomorrow is a mistake, not a collection: its freeze does not exist yet.  Before,
    the run was recorded (every meter a gap), and when the day came the scheduler took it as collected:
    the first pass never ran.  Now one line, exit 2, before the head-end starts — and nothing recorded."""
    import asyncio

    from click.testing import CliRunner

    from gridhead.cli import cli
    from gridhead.headend.config import Config
    from gridhead.headend.server import HeadEnd
    from gridhead.storage.collection import CollectionState

    root, exp = data
    today = dt.datetime.now(schema.LOCAL_TZ).date()
    tomorrow = today + dt.timedelta(days=1)

    async def go():
        he = HeadEnd(Config(data_dir=str(root), listen_host="127.0.0.1", listen_port=0))
        await he.start()
        col = c.Collector(he)
        try:
            with pytest.raises(c.TaskError, match=f"{tomorrow.isoformat()} has not begun"):
                await col.run_days("daily-frozen", [today - dt.timedelta(days=1), tomorrow], max_wait_s=0)
        finally:
            col.close()
            await he.stop()

    asyncio.run(go())
    r = CliRunner().invoke(cli, ["collect", "run", "--from", today.isoformat(), "--to",
                                 (tomorrow + dt.timedelta(days=2)).isoformat(), "--data", str(root), "--port", "0",
                                 "--wait", "0", "--retries", "0"])
    assert r.exit_code == 2 and r.stderr.startswith(f"error: {tomorrow.isoformat()} has not begun"), r.output
    assert "and 2 more" in r.stderr and "listening" not in r.stderr         # refused before it started
    with CollectionState(root / "lake", exp) as st:
        assert st.days("daily-frozen", "collect") == []
