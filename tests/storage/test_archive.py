"""The archive (档案): validation names file, row and column; a bad file changes nothing; round trips."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest

from gridhead.protocols.errors import ArchiveError
from gridhead.storage import generator
from gridhead.storage.archive import TABLES, Archive

# a small archive written by hand: one feeder, one area with its check meter, two customers, one
# of whom had her meter replaced on 2026-06-10 and her tariff changed on 2026-07-01
FILES = {
    "feeders.csv": "feeder_id,name,voltage_kv\n1,10kV 东门线,10\n",
    "areas.csv": "area_id,name,feeder_id,area_type,transformer_kva,pv_capacity_kw\n1,东门1号台区,1,urban,400,0\n",
    "concentrators.csv": "concentrator_id,terminal_address,protocol,comm_mode,area_id\n1,320100000001,698,4g,1\n",
    "meters.csv": ("meter_id,asset_no,comm_address,protocol,concentrator_id,port_oad,register_digits\n"
                   "1,A1,000000000001,645,1,F2090201,6\n2,A2,000000000002,645,1,F2090201,6\n"
                   "3,A3,000000000003,698,1,F2010201,8\n4,A4,000000000004,698,1,F2090201,6\n"),
    "customers.csv": ("customer_id,customer_no,name,category,voltage_v,prepaid\n"
                      "1,3100000001,张三,residential,220,true\n2,3100000002,李四商店,general_commercial,380,false\n"),
    "customer_tariffs.csv": ("customer_id,valid_from,valid_to,tariff_code\n1,2020-01-01,,RES-TIER\n"
                             "2,2020-01-01,2026-07-01,COM-TOU\n2,2026-07-01,,COM-TOU-2021\n"),
    "points.csv": ("point_id,role,customer_id,area_id,feeder_id,hv_metered_lv,tx_capacity_kva,tx_p0_w,tx_pk_w,"
                   "tx_loss_rate_bp,line_loss_rate_bp,contract_demand_kw,basic_charge,pf_standard_x100\n"
                   "1,customer,1,1,,false,,,,,,,none,0\n2,customer,2,1,,false,,,,,,,none,85\n"
                   "3,area_check,,1,,false,,,,,,,none,0\n"),
    "point_multipliers.csv": ("point_id,valid_from,valid_to,ct_ratio,pt_ratio\n1,2020-01-01,,1,1\n"
                              "2,2020-01-01,,1,1\n3,2020-01-01,,60,1\n"),
    "point_meters.csv": ("point_id,meter_id,valid_from,valid_to,install_reading_x100,removal_reading_x100\n"
                         "1,1,2020-01-01,,0,\n2,2,2020-01-01,2026-06-10,0,1234567\n3,3,2020-01-01,,0,\n"
                         "2,4,2026-06-10,,0,\n"),
}


def write_files(d, files=FILES, **changes):
    """Write the hand archive to ``d``; ``changes`` maps file name (dots as __) to new content."""
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for name, text in {**files, **{k.replace("__", "."): v for k, v in changes.items()}}.items():
        (d / name).write_text(text, encoding="utf-8")
        out.append(d / name)
    return out


def edit(name, old, new):
    assert old in FILES[name], (name, old)
    return {name.replace(".", "__"): FILES[name].replace(old, new, 1)}


@pytest.fixture
def db(tmp_path):
    with Archive(tmp_path / "archive.duckdb") as a:
        yield a


def test_import_good_files(db, tmp_path):
    done = db.import_files(write_files(tmp_path / "in"))
    assert done == {"feeders": 1, "areas": 1, "concentrators": 1, "meters": 4, "customers": 2, "customer_tariffs": 3,
                    "points": 3, "point_multipliers": 3, "point_meters": 4}
    before = db.points_on(dt.date(2026, 6, 9)).to_pylist()
    after = db.points_on(dt.date(2026, 6, 10)).to_pylist()
    assert [r["meter_id"] for r in before] == [1, 2, 3] and [r["meter_id"] for r in after] == [1, 4, 3]
    assert after[2]["multiplier"] == 60 and after[2]["role"] == "area_check"
    assert db.points_on(dt.date(2026, 7, 1)).to_pylist()[1]["tariff_code"] == "COM-TOU-2021"
    assert db.points_on(dt.date(2026, 6, 30)).to_pylist()[1]["tariff_code"] == "COM-TOU"
    routes = db.meter_routes().to_pylist()
    assert routes[0]["terminal_address"] == "320100000001" and routes[0]["port_oad"] == "F2090201"
    assert db.known_meter_ids().tolist() == [1, 2, 3, 4]
    changes = db.history("point_meters", dt.date(2026, 6, 1), dt.date(2026, 7, 1)).to_pylist()
    assert [(r["meter_id"], r["removal_reading_x100"]) for r in changes] == [(1, None), (2, 1234567), (4, None), (3, None)]


BAD = [
    # (file changes, expected message start) -- each names file, row and column
    (edit("customers.csv", "220,true", "22O,true"), "customers.csv, row 1, column voltage_v: '22O' is not integer"),
    (edit("customers.csv", "220,true", "230,true"), "customers.csv, row 1, column voltage_v: '230' not one of"),
    (edit("customers.csv", "general_commercial", "shop"), "customers.csv, row 2, column category: 'shop' not one of"),
    (edit("meters.csv", "4,A4,000000000004,698,1", "4,A4,000000000004,698,9"),
     "meters.csv, row 4, column concentrator_id: 9 is not in concentrators.concentrator_id"),
    (edit("meters.csv", "2,A2,", "1,A2,"), "meters.csv, row 2, column meter_id: duplicate (meter_id) within the file"),
    (edit("meters.csv", "2,A2,", "2,A1,"), "meters.csv, row 2, column asset_no: duplicate (asset_no)"),
    (edit("customer_tariffs.csv", "2,2026-07-01,,COM", "2,2026-06-30,,COM"),
     "customer_tariffs.csv, row 3, column valid_from: customer_id 2: period from 2026-06-30 overlaps another row"),
    (edit("point_meters.csv", "2,4,2026-06-10", "2,4,2026-06-09"),
     "point_meters.csv, row 4, column valid_from: point_id 2: period from 2026-06-09 overlaps"),
    (edit("point_meters.csv", "3,3,2020-01-01", "3,1,2020-01-01"),
     "point_meters.csv, row 3, column valid_from: meter_id 1"),
    (edit("points.csv", "3,area_check,,1,", "3,area_check,,,"), "points.csv, row 3, column area_id: an area check"),
    (edit("points.csv", "3,area_check,,1,", "3,area_check,,1,") | edit("points.csv", "2,customer,2,1", "2,area_check,,1"),
     "points.csv, row 3, column area_id: area_id 1 has a second area_check point"),
    (edit("point_meters.csv", "0,1234567", "0,123456789"),
     "point_meters.csv, row 2, column removal_reading_x100: 123456789 does not fit the meter's 6 integer digits"),
    (edit("customer_tariffs.csv", "2,2020-01-01,2026-07-01", "2,2020-01-01,2019-07-01"),
     "customer_tariffs.csv, row 2, column valid_to: must be after valid_from"),
    (edit("meters.csv", "port_oad,register_digits", "port,register_digits"),
     "meters.csv, header, column port_oad: missing"),
    (edit("feeders.csv", "1,10kV 东门线,10", "1,,10"), "feeders.csv, row 1, column name: missing value"),
    (edit("point_multipliers.csv", "3,2020-01-01,,60", "3,2020-13-01,,60"),
     "point_multipliers.csv, row 3, column valid_from: '2020-13-01' is not date"),
]


@pytest.mark.parametrize("changes,message", BAD, ids=[m.split(":")[0] for _c, m in BAD])
def test_bad_file_names_file_row_column_and_changes_nothing(db, tmp_path, changes, message):
    with pytest.raises(ArchiveError) as e:
        db.import_files(write_files(tmp_path / "in", **changes))
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value)
    assert set(db.counts().values()) == {0}


def test_checked_against_what_is_already_there(db, tmp_path):
    db.import_files(write_files(tmp_path / "in"))
    before = db.counts()
    more = tmp_path / "more"
    more.mkdir()
    # a new customer with a good tariff, plus a tariff row overlapping one in the database: all refused
    (more / "customers.csv").write_text("customer_id,customer_no,name,category,voltage_v,prepaid\n"
                                        "3,3100000003,王五,agricultural,380,false\n")
    (more / "customer_tariffs.csv").write_text("customer_id,valid_from,valid_to,tariff_code\n"
                                               "3,2026-01-01,,AGR\n1,2026-05-01,,RES-2\n")
    with pytest.raises(ArchiveError, match=r"^customer_tariffs.csv, row 2, column valid_from: customer_id 1: "
                                           r"period from 2026-05-01 overlaps a period in the archive"):
        db.import_files([more / "customers.csv", more / "customer_tariffs.csv"])
    assert db.counts() == before
    # a reference to a row already in the database is fine; a key already there is not
    (more / "customer_tariffs.csv").write_text("customer_id,valid_from,valid_to,tariff_code\n3,2026-01-01,,AGR\n")
    assert db.import_files([more / "customers.csv", more / "customer_tariffs.csv"]) == \
        {"customers": 1, "customer_tariffs": 1}
    with pytest.raises(ArchiveError, match=r"^customers.csv, row 1, column customer_id: \(customer_id\) already"):
        db.import_files([more / "customers.csv"])


def test_file_level_errors(db, tmp_path):
    files = write_files(tmp_path / "in")
    (tmp_path / "in" / "bills.csv").write_text("a\n1\n")
    with pytest.raises(ArchiveError, match="^bills.csv: not an archive table file"):
        db.import_files([*files, tmp_path / "in" / "bills.csv"])
    with pytest.raises(ArchiveError, match="a second file for table feeders"):
        db.import_files([files[0], files[0]])
    (tmp_path / "in" / "areas.csv").write_text("area_id,name,feeder_id,area_type,transformer_kva,pv_capacity_kw,x\n")
    with pytest.raises(ArchiveError, match="^areas.csv, header, column x: not a column of areas"):
        db.import_files(files)
    assert set(db.counts().values()) == {0}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_generated_archive_round_trip(tmp_path, fmt):
    generator.generate(tmp_path / "gen", 400, 3, seed=5, write_lake=False)
    src = sorted((tmp_path / "gen" / "archive-files").glob("*.csv"))
    with Archive(tmp_path / "a.duckdb") as a:
        a.import_files(src)
        a.export(tmp_path / "out", fmt)
        first = {t.name: a.table(t.name) for t in TABLES}
    with Archive(tmp_path / "b.duckdb") as b:
        b.import_files(sorted((tmp_path / "out").glob(f"*.{fmt}")))
        for t in TABLES:
            assert b.table(t.name).equals(first[t.name]), t.name
    assert first["point_meters"].num_rows > first["points"].num_rows - 1    # replacements are history rows
    shutil.rmtree(tmp_path / "gen")


def test_every_bad_row_is_listed_with_file_row_and_column(db, tmp_path):
    """Issue 19: not only the first bad row — every one (up to MAX_ERRORS), across columns, checks and files."""
    from gridhead.storage.archive import MAX_ERRORS, ImportRefused
    bad = {"customers__csv": FILES["customers.csv"].replace("residential", "resident", 1).replace(",380,", ",381,"),
           "meters__csv": FILES["meters.csv"].replace("000000000002,645", "000000000002,646")
                                             .replace("A4,000000000004,698", "A4,000000000004,699")}
    with pytest.raises(ImportRefused) as e:
        db.import_files(write_files(tmp_path / "in", **bad))
    assert e.value.exit_code == 2
    assert sorted(e.value.errors) == sorted([
        "customers.csv, row 1, column category: 'resident' not one of residential, general_commercial, "
        "large_industrial, agricultural",
        "customers.csv, row 2, column voltage_v: '381' not one of 220, 380, 10000, 20000, 35000, 110000",
        "meters.csv, row 2, column protocol: '646' not one of 645, 698",
        "meters.csv, row 4, column protocol: '699' not one of 645, 698"]), e.value.errors
    assert "(and 3 more)" in str(e.value) and "\n" not in str(e.value)
    assert set(db.counts().values()) == {0}
    # a thousand bad rows: the first MAX_ERRORS, and the message says there are more
    many = "customer_id,customer_no,name,category,voltage_v,prepaid\n" + "".join(
        f"{i},31{i:08d},x,residential,999,true\n" for i in range(1, 1001))
    with pytest.raises(ImportRefused) as e:
        db.import_files(write_files(tmp_path / "many", {"customers.csv": many}))
    assert len(e.value.errors) == MAX_ERRORS and e.value.errors[-1].startswith(f"customers.csv, row {MAX_ERRORS},")
    assert f"more than {MAX_ERRORS} bad rows" in e.value.summary


@pytest.mark.parametrize("text,message", [
    # a quote that never closes: the row it opens in, its column (DuckDB said only "CSV Error on Line: 2")
    ("feeder_id,name,voltage_kv\n1,\"10kV 东门线,10\n2,西门线,10\n",
     "feeders.csv, row 1, column name: unterminated quote: the value runs to the end of the file (line 2)"),
    ("feeder_id,name,voltage_kv\n1,东门线,10\n2,\"西门\"线,10\n",
     "feeders.csv, row 2, column name: the quoted value is followed by '线'"),
    ("feeder_id,name,voltage_kv\n1,东门线,10,7\n2,西门线\n",
     "feeders.csv, row 1, column voltage_kv: 4 fields, the header has 3 (line 2)"),
])
def test_a_csv_the_reader_cannot_parse_names_file_row_and_column(db, tmp_path, text, message):
    from gridhead.storage.archive import ImportRefused
    with pytest.raises(ImportRefused) as e:
        db.import_files(write_files(tmp_path / "in", {"feeders.csv": text}))
    assert e.value.errors[0].startswith(message), e.value.errors
