"""Route this project's loggers (`inpaint.*`) through BentoML's server log handlers.

BentoML sets the root logger to WARNING in `bentoml serve`; without this, the service's
INFO lines (request timings, which models loaded where) would vanish.
"""

from __future__ import annotations

import logging

PROJECT_LOGGER = "inpaint"


def configure_logging(level: str) -> None:
    """Call from a service's `__init__`, after BentoML has set up logging in that process."""
    logger = logging.getLogger(PROJECT_LOGGER)
    logger.setLevel(level)
    bentoml_handlers = logging.getLogger("bentoml").handlers
    if bentoml_handlers:
        logger.handlers = list(bentoml_handlers)
        logger.propagate = False
