"""DL/T 698.45, the object-oriented protocol of current meters and concentrators (being built)."""
