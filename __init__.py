"""gridhead: a DL/T 645-2007 / DL/T 698.45 meter head-end and a billing engine for electricity utilities.

The package's parts, each a subpackage (the layers are drawn in ARCHITECTURE.md):

* ``gridhead.protocols`` — sans-I/O codecs and session state machines of DL/T 645 and DL/T 698.45;
* ``gridhead.headend`` — the asyncio head-end: transports, collection, the control API, the simulator;
* ``gridhead.storage`` — the Parquet lake, the write-ahead log, the archive and the DuckDB views;
* ``gridhead.billing_core`` — the array billing engine and the batch jobs over the lake;
* ``gridhead.cli`` — the ``gridhead`` command.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
