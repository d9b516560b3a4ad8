"""Sans-I/O codecs and session state machines: bytes in, events out, bytes to send.

Imports no asyncio, socket, serial, aiomqtt, duckdb, pyarrow or time (see tests/test_layering.py).
"""
