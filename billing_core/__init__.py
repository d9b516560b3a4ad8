"""Array code over columns: energy, tariffs, bills, line loss (线损), audit signals, ledger rules — no I/O
of its own; the batch jobs that read and write a data directory through ``gridhead.storage`` are in
``billing_core.jobs``.
"""

# the public API: these modules; the compiled kernels (_X) and their twins (_X_py) are private
__all__ = [
    "audit", "energy", "engine", "jobs", "ledger", "lineloss", "powerfactor", "prepay", "rounding",
    "run", "tariff",
]
