"""The 698 remote-control parameters (8000 跳闸/合闸, 8001 保电), encoded by hand from DL/T 698.45 and
compared byte for byte: one builder serves the head-end's commands and `gridhead frame encode`."""

import pytest

from gridhead.protocols.dlt698 import apdu as A
from gridhead.protocols.dlt698 import control as control698


@pytest.mark.parametrize("built, expected", [
    # ACTION-Request-Normal 07 01, PIID 01, OMD 80008100; array(1) of structure(4) {OAD F2050201,
    # unsigned 0, long-unsigned 0, bool false}; no time tag
    (control698.trip(), "07 01 01 80 00 81 00 01 01 02 04 51 F2 05 02 01 11 00 12 00 00 03 00 00"),
    (control698.trip(0xF2050202, 5, 90), "07 01 01 80 00 81 00 01 01 02 04 51 F2 05 02 02 11 05 12 00 5A 03 00 00"),
    # OMD 80008200; array(1) of structure(2) {OAD, enum 0 合闸允许 / 1 直接合闸}
    (control698.close(), "07 01 01 80 00 82 00 01 01 02 02 51 F2 05 02 01 16 00 00"),
    (control698.close(direct=True), "07 01 01 80 00 82 00 01 01 02 02 51 F2 05 02 01 16 01 00"),
    # OMD 80017F00 / 80018000, NULL parameter
    (control698.protect(True), "07 01 01 80 01 7F 00 00 00"),
    (control698.protect(False), "07 01 01 80 01 80 00 00 00"),
])
def test_action_bytes(built, expected):
    omd, data = built
    assert A.action(omd, data, 1).to_bytes().hex(" ").upper() == expected
