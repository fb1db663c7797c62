"""The request-head reader: a whole head read in one go must come out exactly as the same bytes
read line by line (the strict path every other shape takes), accepted or refused alike."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from nitrotls.kms.local import http11

NAMES = st.sampled_from(["Host", "X-Amz-Target", "content-type", "X-A", "x-a", "A"])
EDGES = st.sampled_from(["", "", " ", "\t", "\x0b", "\x0c", "\x85", "\xa0", "\x1f"])
INNER = st.text(alphabet="ab:;, \té\x85", max_size=8)
FLAWS = [
    "none", "none", "none", "bare-lf", "fold", "bad-name", "no-colon", "cr-in-value",
    "bad-method", "bad-version", "empty-target", "blank-before", "two-blanks-before",
    "bare-lf-at-end", "long-version", "four-parts",
]  # fmt: skip


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """A valid head with at most one flaw, so that both the one-go reader and the line-by-line
    reader it falls back to see every kind of input often."""
    flaw = draw(st.sampled_from(FLAWS))
    method = {"bad-method": "P@ST"}.get(flaw, "POST")
    target = "" if flaw == "empty-target" else draw(st.sampled_from(["/", "/?a=b", "http://h/p"]))
    version = (
        "HTTP/2.0" if flaw == "bad-version" else draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0"]))
    )
    headers = [
        f"{draw(NAMES)}:{draw(EDGES)}{draw(INNER)}{draw(EDGES)}"
        for _ in range(draw(st.integers(1, 5)))
    ]
    where = draw(st.integers(0, len(headers) - 1))
    line = headers[where]
    headers[where] = {
        "fold": " " + line,
        "bad-name": "Bad Name" + line[line.index(":") :],
        "no-colon": line.replace(":", "", 1),
        "cr-in-value": line + "\rx",
    }.get(flaw, line)
    endings = ["\r\n"] * (len(headers) + 2)
    if flaw == "bare-lf":
        endings[where + 1] = "\n"
    if flaw == "bare-lf-at-end":
        endings[-1] = "\n"
    version += {"long-version": "0", "four-parts": " x"}.get(flaw, "")
    lines = [f"{method} {target} {version}", *headers, ""]
    text = "".join(line + ending for line, ending in zip(lines, endings, strict=True))
    prefix = {"blank-before": "\r\n", "two-blanks-before": "\r\n\r\n"}.get(flaw, "")
    return (prefix + text).encode("latin-1") + b"{}"


def outcome(chunks: list[bytes]) -> object:
    """The head and how many bytes it took, or the refusal."""
    reader = http11.HeadReader()
    buffer = bytearray()
    fed = 0
    try:
        for chunk in chunks:
            buffer += chunk
            fed += len(chunk)
            start, head = reader.feed(buffer, 0)
            del buffer[:start]
            if head is not None:
                return head, fed - len(buffer)
    except http11.HTTPRequestError as error:
        return error.status, error.message
    return None


@settings(max_examples=400, deadline=None)
@given(heads())
def test_whole_head_reads_like_line_by_line(data: bytes) -> None:
    at_once = outcome([data])
    byte_by_byte = outcome([data[i : i + 1] for i in range(len(data))])
    assert at_once == byte_by_byte


def test_the_usual_head_is_read() -> None:
    data = b"POST / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a:  2 \r\nContent-Length: 2\r\n\r\n{}"
    found = outcome([data])
    assert isinstance(found, tuple)
    head, used = found
    assert head == http11.RequestHead(
        "POST", "/", "HTTP/1.1", {"host": "h", "x-a": "1,2", "content-length": "2"}
    )
    assert data[used:] == b"{}"
