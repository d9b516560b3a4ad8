"""The batch jobs over a data directory: the bill run, line loss, the audit list, the ledger, prepayment,
reports and the bill run on a Dask cluster.

They sit above the pure array kernels of ``gridhead.billing_core`` and read and write only through
``gridhead.storage`` (the lake, the archive and ``storage.results``).
"""

__all__ = ["audit", "bills", "dist", "ledger", "lineloss", "prepay", "reports"]
