"""Simulated concentrators and meters for tests, benchmarks and the demo — never used by the head-end.

* ``model`` — the fleet model (terminals, meters, the archive they come from);
* ``answers`` — what a simulated terminal or meter answers (DL/T 698.45 and DL/T 645);
* ``simulator`` — the fleet on TCP (dial-in or listen), sharded dialling, the MQTT side (``mqtt``);
* ``rs485`` — meters on a serial line (a pty pair in the tests);
* ``demo`` — ``gridhead demo``: a whole month collected, billed and audited on an embedded fleet.

It sits above the head-end (it drives a real one in the demo) and below the command line.
"""

__all__ = ["answers", "demo", "model", "mqtt", "rs485", "simulator"]
