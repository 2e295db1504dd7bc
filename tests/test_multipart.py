"""The incremental multipart/related parser: any chunking, headers, boundaries, bad endings."""

from __future__ import annotations

import time

import pytest

from services.sample_gateway.multipart import (
    MultipartParser,
    Part,
    boundary_of,
    media_params,
)

BOUNDARY = "b0und:ary"
DICOM_CT = "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"

# A preamble with a false start, three parts (headers; none; headers and an empty body),
# bodies holding CRLFs, lone '--', a boundary prefix cut short, and an epilogue.
BODY = (
    b"This is a preamble. --b0und:ar is not a boundary\r\n"
    b"--b0und:ary\r\n"
    b"Content-Type: " + DICOM_CT.encode() + b"\r\n"
    b"Content-Location: /studies/1/series/2/instances/3\r\n"
    b"\r\n"
    b"first\r\nline two\r\n--\r\n--b0und:ar\r\n-\r\n\r\n"
    b"\r\n--b0und:ary   \r\n"  # transport padding after the delimiter
    b"\r\n"
    b"second, no headers"
    b"\r\n--b0und:ary\r\n"
    b"X-Empty: yes\r\n"
    b"\r\n"
    b"\r\n--b0und:ary--\r\n"
    b"epilogue, ignored; --b0und:ary\r\n"
)

EXPECTED = [
    Part(
        {"content-type": DICOM_CT, "content-location": "/studies/1/series/2/instances/3"},
        b"first\r\nline two\r\n--\r\n--b0und:ar\r\n-\r\n\r\n",
    ),
    Part({}, b"second, no headers"),
    Part({"x-empty": "yes"}, b""),
]


def parse(data: bytes, chunk_size: int, boundary: str = BOUNDARY) -> list[Part]:
    parser = MultipartParser(boundary)
    parts: list[Part] = []
    for start in range(0, len(data), chunk_size):
        parts.extend(parser.feed(data[start : start + chunk_size]))
    parser.close()
    return parts


def test_whole_body_in_one_chunk() -> None:
    assert parse(BODY, len(BODY)) == EXPECTED


def test_every_chunk_size_gives_the_same_parts() -> None:
    wrong = [size for size in range(1, len(BODY) + 1) if parse(BODY, size) != EXPECTED]
    assert wrong == []


def test_parts_are_yielded_as_soon_as_they_are_complete() -> None:
    parser = MultipartParser(BOUNDARY)
    first_end = BODY.index(b"\r\n--b0und:ary   ")
    # The separator of the next part is still incomplete: nothing yet.
    assert list(parser.feed(BODY[: first_end + 8])) == []
    assert list(parser.feed(BODY[first_end + 8 : first_end + 13])) == [EXPECTED[0]]


def test_bodies_are_their_own_bytes_untouched_by_later_chunks() -> None:
    """The parser copies a body out of its buffer once and then reuses the buffer: a body
    that were a view into it would change as the next chunks arrive."""
    parser = MultipartParser(BOUNDARY)
    first_end = BODY.index(b"\r\n--b0und:ary   ")
    (first,) = parser.feed(BODY[: first_end + 13])
    rest = list(parser.feed(BODY[first_end + 13 :]))
    parser.close()
    assert type(first.body) is bytes
    assert [first, *rest] == EXPECTED


def test_part_headers_are_case_insensitive_and_content_type_property() -> None:
    body = (b"--x\r\nCONTENT-TYPE:  application/dicom \r\nContent-ID: <1@x>\r\n\r\nabc\r\n--x--")
    [part] = parse(body, 3, boundary="x")
    assert part.headers == {"content-type": "application/dicom", "content-id": "<1@x>"}
    assert part.content_type == "application/dicom"
    assert Part({}, b"").content_type == ""


def test_body_may_start_at_the_first_delimiter_without_preamble() -> None:
    assert parse(b"--q\r\n\r\nonly\r\n--q--", 1, boundary="q") == [Part({}, b"only")]


def test_missing_closing_boundary_raises_on_close() -> None:
    truncated = BODY[: BODY.index(b"\r\n--b0und:ary--")]
    parser = MultipartParser(BOUNDARY)
    parts = list(parser.feed(truncated))
    assert parts == EXPECTED[:2]  # the last part never completed
    with pytest.raises(ValueError, match="ended before its closing boundary"):
        parser.close()


@pytest.mark.parametrize("data", [b"", b"no boundary anywhere\r\n", b"--b0und:ary\r\n\r\nhalf a part"])
def test_close_raises_for_bodies_that_never_close(data: bytes) -> None:
    parser = MultipartParser(BOUNDARY)
    assert list(parser.feed(data)) == []
    with pytest.raises(ValueError, match="closing boundary"):
        parser.close()


def test_closing_delimiter_split_before_its_dashes() -> None:
    parser = MultipartParser("z")
    parts = list(parser.feed(b"--z\r\n\r\nA\r\n--z"))
    assert parts == [Part({}, b"A")]
    with pytest.raises(ValueError):
        parser.close()  # '--' not yet seen
    assert list(parser.feed(b"-")) == []
    assert list(parser.feed(b"-\r\n")) == []
    parser.close()


def test_data_after_the_closing_delimiter_is_ignored() -> None:
    parser = MultipartParser("z")
    assert list(parser.feed(b"--z\r\n\r\nA\r\n--z--\r\n")) == [Part({}, b"A")]
    assert list(parser.feed(b"--z\r\n\r\nB\r\n--z--")) == []
    parser.close()


def test_part_with_headers_but_no_blank_line_is_refused() -> None:
    parser = MultipartParser("z")
    with pytest.raises(ValueError, match="without a blank line"):
        list(parser.feed(b"--z\r\nContent-Type: application/dicom\r\n--z--"))


def test_large_part_in_small_chunks_parses_in_linear_time() -> None:
    payload = (b"\x00\r\n-\xff" * (5 * 1024 * 1024 // 5))  # 5 MiB of CRLFs and dashes
    body = (b"--" + BOUNDARY.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n"
            + payload + b"\r\n--" + BOUNDARY.encode() + b"--\r\n")
    started = time.perf_counter()
    whole = parse(body, len(body))
    in_one_go = time.perf_counter() - started
    started = time.perf_counter()
    parts = parse(body, 4096)
    chunked = time.perf_counter() - started
    assert len(parts) == 1 and parts[0].body == payload and whole == parts
    # Relative to one big feed in the same run (a rescan per chunk would be ~1000x slower).
    assert chunked < 30 * in_one_go + 0.5, f"4 KiB chunks {chunked:.2f} s vs one feed {in_one_go:.3f} s"


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ('multipart/related; type="application/dicom"; boundary="a b:c=d"', "a b:c=d"),
        ("multipart/related; type=application/dicom; boundary=simple-123", "simple-123"),
        ("Multipart/Related; BOUNDARY=UPPER", "UPPER"),
        ("application/dicom; boundary=x", None),
        ("application/json", None),
        ("", None),
    ],
)
def test_boundary_of(content_type: str, boundary: str | None) -> None:
    assert boundary_of(content_type) == boundary


def test_quoted_boundary_with_spaces_parses() -> None:
    boundary = boundary_of('multipart/related; type="application/dicom"; boundary="a b:c=d"')
    assert boundary is not None
    body = b'--a b:c=d\r\nContent-Type: application/dicom\r\n\r\nX\r\n--a b:c=d--\r\n'
    assert parse(body, 2, boundary=boundary) == [Part({"content-type": "application/dicom"}, b"X")]


@pytest.mark.parametrize(
    ("content_type", "params"),
    [
        (DICOM_CT, {"transfer-syntax": "1.2.840.10008.1.2.1"}),
        ('application/dicom; Transfer-Syntax="1.2.840.10008.1.2"; x=1',
         {"transfer-syntax": "1.2.840.10008.1.2", "x": "1"}),
        ("application/dicom", {}),
        ("", {}),
    ],
)
def test_media_params(content_type: str, params: dict[str, str]) -> None:
    assert media_params(content_type) == params
