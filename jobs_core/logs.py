"""The log format of every jobs_core process: the commands, the workers and each server process."""
from __future__ import annotations

import logging


def configure_logging() -> None:
    """One line per record, with time, level and logger."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
