"""Log output of both services: text (the default) or one JSON object per line (``--log-format json``).

A JSON line has ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger`` and ``message``
(the formatted message), then every field the call passed in ``extra=`` (``version``, ``job_id``,
``method``, ``code``, ...), then ``worker`` and ``pid`` in an index ``--workers`` worker, and
``exception`` (the formatted traceback) when there is one. Values that JSON cannot hold are
written as their ``str()``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

LOG_FORMATS = ("text", "json")
# Set by a service to its --log-format, for the child processes it starts (the trainer's training
# processes configure their own logging).
LOG_FORMAT_ENV = "MUSICREC_LOG_FORMAT"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line. ``fields``: added to every record (e.g. the
    worker number)."""

    def __init__(self, fields: dict | None = None):
        super().__init__()
        self._fields = dict(fields or {})

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
                    .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        entry.update(self._fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str | int, log_format: str = "text", *, text_format: str,
                      fields: dict | None = None) -> None:
    """Send the root logger's records to stderr at ``level``, as ``text_format`` (a
    ``logging.Formatter`` format string) or as JSON lines (``log_format`` "json", with ``fields``
    added to each line)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(fields) if log_format == "json" else logging.Formatter(text_format))
    logging.basicConfig(level=level, handlers=[handler], force=True)
