"""Array code over columns: energy, tariffs, bills, line loss (线损). No I/O of its own."""
