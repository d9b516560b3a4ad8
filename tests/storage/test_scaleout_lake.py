"""The lake behind one URI (storage.lakefs, GRIDHEAD_LAKE): the bill run reads its readings through
pyarrow.fs — from a file:// URI, and from a real S3-compatible server process (moto_server on 127.0.0.1)
holding an uploaded copy of a generated lake — and publishes bills byte-identical to the run on the local
lake, single node and on a LocalCluster.  The data directory of those runs has no local lake at all, so
nothing can be read from it by mistake."""

from __future__ import annotations

import datetime as dt
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import pytest

from gridhead.protocols.errors import StorageError
from gridhead.storage import archive, lakefs
from gridhead.billing_core.jobs import bills, dist, lineloss

from tests.conftest import generated

pafs = pytest.importorskip("pyarrow.fs")
PERIOD = "2026-06"
FILES = ("bills.parquet", "bill_items.parquet")
BUCKET = "gridhead-test"
FIRST, LAST = dt.date(2026, 6, 5), dt.date(2026, 6, 25)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """200 customers over May 31 .. July 2 with meter replacements; June's bills on the local lake."""
    d = tmp_path_factory.mktemp("lakefs") / "local"
    generated(d, 200, 33, seed=5, start=dt.date(2026, 5, 31), curve_fraction=0,
              rates={"replacement": 0.08})
    bare = d.parent / "bare"                       # the archive only: no lake/
    bare.mkdir()
    shutil.copy(d / "archive.duckdb", bare / "archive.duckdb")
    bills.run(d, PERIOD)
    return d, bare


def _bare(bare: pathlib.Path, to: pathlib.Path) -> pathlib.Path:
    shutil.copytree(bare, to)
    return to


def _same(a: pathlib.Path, b: pathlib.Path) -> None:
    for f in FILES:
        x = (a / "bills" / f"period={PERIOD}" / f).read_bytes()
        y = (b / "bills" / f"period={PERIOD}" / f).read_bytes()
        assert x == y, f"{f} differs"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(fleet):
    """A moto S3 server process on 127.0.0.1 with the fleet's lake uploaded under s3://BUCKET/lake."""
    port = _free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.2)
        with pytest.MonkeyPatch.context() as mp:
            for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
                mp.setenv(k, env[k])
            fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                                   allow_bucket_creation=True)
            fs.create_dir(BUCKET)
            pafs.copy_files(str(fleet[0] / "lake"), f"{BUCKET}/lake", destination_filesystem=fs)
            uri = f"s3://{BUCKET}/lake?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
            assert lakefs.open_lake(uri).files("readings/kind=daily"), "the upload put no readings in S3"
            yield uri, mp
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_file_uri_lake_bills_identical(fleet, tmp_path, monkeypatch):
    local, bare = fleet
    d = _bare(bare, tmp_path / "file-uri")
    monkeypatch.setenv(lakefs.ENV, (local / "lake").resolve().as_uri())
    bills.run(d, PERIOD)
    _same(local, d)
    assert not (d / "lake").exists()


@pytest.fixture(scope="module")
def cluster():
    with dist.client(workers=2) as c:
        yield c


def test_s3_lake_bills_identical_single_node_and_local_cluster(fleet, s3, cluster, tmp_path):
    local, bare = fleet
    uri, mp = s3
    mp.setenv(lakefs.ENV, uri)
    d = _bare(bare, tmp_path / "s3-single")
    bills.run(d, PERIOD)
    _same(local, d)
    d2 = _bare(bare, tmp_path / "s3-dist")
    s = dist.run(d2, PERIOD, cluster)       # the tasks get the driver's lake URI, not the workers' environment
    assert s["tasks"]["count"] == 16
    _same(local, d2)
    assert not (d / "lake").exists() and not (d2 / "lake").exists()
    mp.delenv(lakefs.ENV)


def test_s3_lake_line_loss_identical_single_node_and_local_cluster(fleet, s3, cluster, tmp_path):
    """The URI path reads the part files (no materialised pivots): the same rows as the local read."""
    local, bare = fleet
    uri, mp = s3
    with archive.Archive(local / "archive.duckdb", read_only=True) as a:
        ref = lineloss.compute(a, local / "lake", FIRST, LAST)
        got = lineloss.compute(a, uri, FIRST, LAST)
    assert lineloss.month_table(got).equals(lineloss.month_table(ref))
    assert all(lineloss.day_table(got, d).equals(lineloss.day_table(ref, d)) for d in ref.days)
    mp.setenv(lakefs.ENV, uri)
    res, _tasks = dist.lineloss_run(_bare(bare, tmp_path / "ll"), FIRST, LAST, cluster, save=False)
    mp.delenv(lakefs.ENV)
    assert lineloss.month_table(res).equals(lineloss.month_table(ref))


def test_bad_lake_uri_is_one_line(fleet, s3, tmp_path, monkeypatch):
    _local, bare = fleet
    d = _bare(bare, tmp_path / "bad")
    monkeypatch.setenv(lakefs.ENV, "nosuch://x/y")
    with pytest.raises(StorageError, match=r"^lake nosuch://x/y: not a usable lake URI"):
        bills.run(d, PERIOD)
    uri, _mp = s3
    dead = uri.replace(uri.split("endpoint_override=")[1].split("&")[0], f"127.0.0.1:{_free_port()}")
    monkeypatch.setenv(lakefs.ENV, dead + "&connect_timeout=1&request_timeout=1")
    with pytest.raises(StorageError, match=r"^lake s3://"):
        bills.run(d, PERIOD)
    assert not (d / "bills" / f"period={PERIOD}").exists()


def test_cli_line_loss_from_s3_refuses_to_save_elsewhere(fleet, s3, tmp_path):
    local, bare = fleet
    uri, _mp = s3
    d = _bare(bare, tmp_path / "cli")
    env = {**os.environ, lakefs.ENV: uri, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    cmd = [sys.executable, "-c", "import cli; cli.main()", "lineloss", "--date", "2026-06-10", "--csv",
           "--data", str(d)]
    root = pathlib.Path(__file__).resolve().parents[2]
    r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "use --no-save" in r.stderr.strip().splitlines()[-1]
    assert not (d / "lake").exists()
    ok = subprocess.run(cmd + ["--no-save"], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    ref = subprocess.run(cmd[:-1] + [str(local), "--no-save"], cwd=root,
                         env={k: v for k, v in env.items() if k != lakefs.ENV}, capture_output=True, text=True,
                         timeout=120)
    assert ok.returncode == 0, ok.stderr[-1000:]
    assert ok.stdout == ref.stdout and ok.stdout.count("\n") > 2     # from S3 = from the local lake
