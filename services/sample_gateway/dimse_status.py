"""DIMSE status codes of the services the gateway uses, as tables (pure).

As in pynetdicom's ``status`` module: per service class, each code or code range maps to a
category and a description (PS3.4 C.4.1.1.4 C-FIND, C.4.2.1.5 C-MOVE, C.4.3.1.4 C-GET,
B.2.3 C-STORE; PS3.7 Annex C for the general codes). :class:`Status` names the codes the
gateway acts on. :func:`describe` never fails: an unknown code gets the category its range
has in PS3.7 C.1 and the description "unknown status".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum


class Category(str, Enum):
    SUCCESS = "success"
    PENDING = "pending"
    WARNING = "warning"
    CANCEL = "cancel"
    FAILURE = "failure"


class Status(IntEnum):
    SUCCESS = 0x0000
    PENDING = 0xFF00
    PENDING_WARNING = 0xFF01  # C-FIND: optional keys not supported
    CANCEL = 0xFE00
    SUB_OPERATIONS_FAILED = 0xB000  # C-GET / C-MOVE: completed with failures
    OUT_OF_RESOURCES = 0xA700
    OUT_OF_RESOURCES_MATCHES = 0xA701
    OUT_OF_RESOURCES_SUB_OPERATIONS = 0xA702
    MOVE_DESTINATION_UNKNOWN = 0xA801
    IDENTIFIER_DOES_NOT_MATCH = 0xA900
    UNABLE_TO_PROCESS = 0xC000
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    NOT_AUTHORISED = 0x0124
    # What the gateway's storage SCP answers to an object nobody asked for (a C000-CFFF
    # "cannot understand" code: the sender must not retry it).
    UNEXPECTED_OBJECT = 0xC001


@dataclass(frozen=True)
class StatusInfo:
    code: int
    category: Category
    description: str

    @property
    def hex(self) -> str:
        return f"0x{self.code:04X}"

    def __str__(self) -> str:
        return f"{self.hex} ({self.description})" if self.description else self.hex


Row = tuple[int, int, Category, str]

_GENERAL: tuple[Row, ...] = (
    (0x0000, 0x0000, Category.SUCCESS, "success"),
    (0xFE00, 0xFE00, Category.CANCEL, "cancelled"),
    (0x0122, 0x0122, Category.FAILURE, "SOP class not supported"),
    (0x0124, 0x0124, Category.FAILURE, "not authorised"),
    (0x0110, 0x0110, Category.FAILURE, "processing failure"),
    (0x0211, 0x0211, Category.FAILURE, "unrecognised operation"),
    (0x0213, 0x0213, Category.FAILURE, "resource limitation"),
)

FIND: tuple[Row, ...] = (
    (0xFF00, 0xFF00, Category.PENDING, "match"),
    (0xFF01, 0xFF01, Category.PENDING, "match; some optional keys were not supported"),
    (0xA700, 0xA7FF, Category.FAILURE, "refused: out of resources"),
    (0xA900, 0xA9FF, Category.FAILURE, "identifier does not match SOP class"),
    (0xC000, 0xCFFF, Category.FAILURE, "unable to process"),
    *_GENERAL,
)

_RETRIEVE: tuple[Row, ...] = (
    (0xFF00, 0xFF00, Category.PENDING, "sub-operations are continuing"),
    (0xB000, 0xB000, Category.WARNING, "sub-operations complete, one or more failures"),
    (0xA701, 0xA701, Category.FAILURE, "refused: out of resources, unable to calculate the matches"),
    (0xA702, 0xA702, Category.FAILURE, "refused: out of resources, unable to perform sub-operations"),
    (0xA700, 0xA7FF, Category.FAILURE, "refused: out of resources"),
    (0xA900, 0xA9FF, Category.FAILURE, "identifier does not match SOP class"),
    (0xAA00, 0xAA04, Category.FAILURE, "frame-level retrieve failed"),
    (0xC000, 0xCFFF, Category.FAILURE, "unable to process"),
)

GET: tuple[Row, ...] = (*_RETRIEVE, *_GENERAL)

MOVE: tuple[Row, ...] = (
    (0xA801, 0xA801, Category.FAILURE, "move destination unknown"),
    *_RETRIEVE,
    *_GENERAL,
)

STORE: tuple[Row, ...] = (
    (0xA700, 0xA7FF, Category.FAILURE, "refused: out of resources"),
    (0xA900, 0xA9FF, Category.FAILURE, "data set does not match SOP class"),
    (0xC001, 0xC001, Category.FAILURE, "not expected: the gateway did not ask for this object"),
    (0xC000, 0xCFFF, Category.FAILURE, "cannot understand"),
    (0xB000, 0xB000, Category.WARNING, "coercion of data elements"),
    (0xB006, 0xB006, Category.WARNING, "elements discarded"),
    (0xB007, 0xB007, Category.WARNING, "data set does not match SOP class"),
    *_GENERAL,
)


def describe(table: tuple[Row, ...], code: int) -> StatusInfo:
    """The first row of ``table`` whose range holds ``code``; else PS3.7's category."""
    for low, high, category, description in table:
        if low <= code <= high:
            return StatusInfo(code, category, description)
    return StatusInfo(code, _fallback_category(code), "unknown status")


def _fallback_category(code: int) -> Category:
    if code == 0x0000:
        return Category.SUCCESS
    if code in (0xFF00, 0xFF01):
        return Category.PENDING
    if code == 0xFE00:
        return Category.CANCEL
    if code == 0x0001 or 0xB000 <= code <= 0xBFFF or code in (0x0107, 0x0116):
        return Category.WARNING
    return Category.FAILURE


__all__ = ["FIND", "GET", "MOVE", "STORE", "Category", "Status", "StatusInfo", "describe"]
