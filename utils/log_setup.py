"""Route this project's loggers (`inpaint.*`) through BentoML's server log handlers.

BentoML sets the root logger to WARNING in `bentoml serve`; without this, the service's
INFO lines (request timings, which models loaded where) would vanish. With LOG_FORMAT=json
they go to stderr instead, one JSON object per line (python-json-logger), with the fields a
log record carries in `extra` (the request log's request_id, route, status, ...).
"""

from __future__ import annotations

import logging
import sys

PROJECT_LOGGER = "inpaint"
JSON_FIELDS = ("levelname", "name", "message")


def json_handler() -> logging.Handler:
    from pythonjsonlogger.json import JsonFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            list(JSON_FIELDS),
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",  # ISO 8601, UTC
            json_ensure_ascii=False,
        )
    )
    return handler


def configure_logging(level: str, log_format: str | None = None) -> None:
    """Call from a service's `__init__`, after BentoML has set up logging in that process.
    `log_format` "text" or "json"; None: the LOG_FORMAT setting."""
    if log_format is None:
        from config.settings import get_settings

        log_format = get_settings().log_format
    logger = logging.getLogger(PROJECT_LOGGER)
    logger.setLevel(level)
    if log_format == "json":
        logger.handlers = [json_handler()]
        logger.propagate = False
        return
    bentoml_handlers = logging.getLogger("bentoml").handlers
    if bentoml_handlers:
        logger.handlers = list(bentoml_handlers)
        logger.propagate = False
