"""Structured logs: one JSON object per line (``{"ts": ..., "level": ..., "event": ..., **fields}``).

``log = get_logger("headend")``; ``event(log, "login", address=a, peer=p)``.  ``setup(stream)`` installs
the JSON formatter on the ``gridhead`` logger (``gridhead serve`` does, to stderr).
"""

from __future__ import annotations

import json
import logging
import sys

ROOT = "gridhead"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
               "event": record.getMessage()}
        fields = getattr(record, "fields", None)
        if fields:
            out.update(fields)
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(out, ensure_ascii=False, default=str)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"{ROOT}.{name}")


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields) -> None:
    """Log one event with its fields (cheap when the level is off)."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})


def setup(stream=None, level: int = logging.INFO) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger(ROOT)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


