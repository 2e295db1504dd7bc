"""Keeping DICOM values out of the gateway's log.

The gateway's own log lines name pulls, reasons, exception types and attribute names, never
a value read from an object. Two things would still carry values into the log:

- pydicom's warnings ("Invalid value for VR IS: 'Hansen'"), sent to its logger and through
  :mod:`warnings`;
- exception messages in tracebacks (``int('Hansen')``), from any logger with ``exc_info``;
- httpx's request lines (a WADO-RS URL holds the archive's study and series UIDs): its
  loggers are set to warnings and above, and the gateway's own lines name ``studies/…``.

:func:`configure_logging` (the gateway process at start, each worker process) sends warnings
through logging and puts :class:`NoDicomValues` on the root handlers: quoted text in
pydicom's and warnings' records becomes ``'…'``, and a traceback keeps its frames and the
exception's type but not its message.
"""

from __future__ import annotations

import errno
import logging
import re
import traceback

FORMAT = "[%(levelname)1.1s %(asctime)s %(name)s] %(message)s"

_QUOTED = re.compile(r"""b?'[^'\n]*'|b?"[^"\n]*\"""")
_VALUE_LOGGERS = ("pydicom", "py.warnings")


def redact(text: str) -> str:
    """``"Invalid value for VR IS: 'Hansen'"`` -> ``"Invalid value for VR IS: '…'"``."""
    return _QUOTED.sub("'\u2026'", text)


def describe_error(error: BaseException) -> str:
    """An exception for the log: its type (and errno) and where it was raised, not its message."""
    frames = "".join(traceback.format_tb(error.__traceback__)).rstrip()
    text = f"{type(error).__module__}.{type(error).__qualname__}"
    code = getattr(error, "errno", None)
    if isinstance(error, OSError) and isinstance(code, int):
        text += f" [{errno.errorcode.get(code, code)}]"
    text += " (message withheld: it may hold DICOM values)"
    return f"{text}\n{frames}" if frames else text


class NoDicomValues(logging.Filter):
    """Redacts quoted values of pydicom's and warnings' records; replaces tracebacks of
    every record by :func:`describe_error`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_no_dicom_values", False):
            return True
        if record.name.startswith(_VALUE_LOGGERS):
            record.msg, record.args = redact(record.getMessage()), ()
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {describe_error(record.exc_info[1])}"
            record.args, record.exc_info, record.exc_text = (), None, None
        record._no_dicom_values = True
        return True


def configure_logging(level: int = logging.INFO) -> None:
    """The gateway's logging: format and level (if nothing is configured yet), warnings
    through logging, :class:`NoDicomValues` on every root handler. Safe to call again."""
    logging.basicConfig(level=level, format=FORMAT)
    logging.captureWarnings(True)
    # httpx logs every request's URL at INFO: a WADO-RS URL holds the archive's UIDs.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, NoDicomValues) for f in handler.filters):
            handler.addFilter(NoDicomValues())


__all__ = ["NoDicomValues", "configure_logging", "describe_error", "redact"]
