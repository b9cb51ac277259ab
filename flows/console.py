"""How flow runs look on the console: a trainflow error is its message, not a stack.

Prefect's flow and task engines log a failure's exception with its stack at ERROR. For a
`TrainflowError` the message already says what is wrong and how to fix it, so the console handler
shows the failure line without the stack; Prefect's API handler (the UI's logs) keeps the stack, and
`--debug` leaves the console as Prefect made it. Any other exception keeps its stack everywhere.
"""
from __future__ import annotations

import copy
import logging
import os

from trainflow.errors import TrainflowError

SHORT_ERRORS_ENV = "TRAINFLOW_SHORT_ERRORS"  # set by `trainflow serve` for the flow runs it starts


class MessageOnlyFormatter(logging.Formatter):
    """Wraps a handler's formatter; formats a copy of a trainflow error's record without its stack."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, TrainflowError):
            record = copy.copy(record)  # other handlers (the API's) still get the stack
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return self.inner.format(record)


def show_errors_as_messages() -> int:
    """Wrap the formatter of every Prefect console handler of this process; returns how many."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict))]
    wrapped = 0
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler) and not isinstance(handler.formatter,
                                                                             MessageOnlyFormatter):
                handler.setFormatter(MessageOnlyFormatter(handler.formatter))
                wrapped += 1
    return wrapped


def show_errors_as_messages_if_asked() -> None:
    """In a flow-run process started by `trainflow serve` (unless it ran with --debug)."""
    if os.environ.get(SHORT_ERRORS_ENV) == "1":
        show_errors_as_messages()
