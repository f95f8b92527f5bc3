"""Ingest's WARC reader: Common Crawl response records -> main text of their HTML pages.

Records are read one at a time with FastWARC (memory follows the largest record, not the file)
and every record ends as a page or as a reason it is not one:

  not_a_response   request, metadata, warcinfo... records (the detail names the type)
  truncated_record the crawler cut the payload (a WARC-Truncated header): the page is incomplete
  http_status      an HTTP status other than 200
  not_html         a payload that is not HTML (the detail gives its Content-Type)
  undecodable      a content or transfer encoding that cannot be undone, or bytes that are not
                   text in the declared charset nor in the one detected
and a record whose block ends before its Content-Length, or that has none (its headers were cut),
means the file is truncated: CorruptInputError, and ingest rejects the rest as `corrupt_file`.

Main text comes from Resiliparse (DCLM's extractor, the default) or trafilatura (FineWeb's), both
with their main-content heuristics on; `benchmarks/warc.py` measures them.
"""

from __future__ import annotations

import codecs
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from fastwarc.stream_io import BrotliReader, ChunkedReader, GzipReader, ZstdReader
from fastwarc.warc import ArchiveIterator, HeaderMap, WarcRecordType
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import detect_encoding
from resiliparse.parse.html import HTMLTree

from winnow.storage.fs import Location, StorageError
from winnow.storage.shards import S3_READ_BYTES, CorruptInputError

HTML_TYPES = ("text/html", "application/xhtml+xml")
_CONTENT_DECODERS = {"gzip": GzipReader, "x-gzip": GzipReader, "br": BrotliReader, "zstd": ZstdReader}


@dataclass
class Page:
    """A decoded HTML response, or why a record is not one (`reason`, `detail`)."""

    position: int  # the record's index in its file
    record_type: str | None  # WARC-Type: response, request, metadata, ...
    record_id: str | None
    url: str | None
    date: str | None
    html: str | None = None
    charset: str | None = None
    reason: str | None = None
    detail: str | None = None
    raw: bytes | None = None  # an undecodable payload, kept in the reject row


def iter_pages(source: Location) -> Iterator[Page]:
    """Every record of a WARC file (plain, .gz or .zst), in order, as a Page; a damaged file raises
    CorruptInputError after the pages before the damage."""
    with source.open_read() as raw:
        stream = raw if source.is_local else io.BufferedReader(raw, S3_READ_BYTES)
        try:
            for position, record in enumerate(ArchiveIterator(stream, parse_http=False)):
                yield _page(record, position, source)
        except OSError as err:  # FastWARC's parse and decompression errors, or a record cut short
            if isinstance(err, (FileNotFoundError, StorageError, CorruptInputError)):
                raise  # the store's error (the shard task is retried), or already said
            raise CorruptInputError(f"{source.uri}: corrupt WARC: {err}") from err


def _page(record, position: int, source: Location) -> Page:
    headers = record.headers
    page = Page(position, headers.get("WARC-Type"), _unbracket(record.record_id),
                _unbracket(headers.get("WARC-Target-URI")), headers.get("WARC-Date"))
    is_response = record.record_type == WarcRecordType.response
    # Every block is read to its end: one shorter than its Content-Length means the file stops here.
    block = record.reader.read() if is_response else b""
    size = len(block) if is_response else record.reader.consume()
    if headers.get("Content-Length") is None:  # a WARC record always has one: its headers were cut
        raise CorruptInputError(f"{source.uri}: record {position} has no Content-Length: the file is truncated "
                                "or corrupt")
    if size < record.content_length:
        raise CorruptInputError(f"{source.uri}: record {position} ({page.record_id}) ends after {size} of its "
                                f"{record.content_length} bytes: the file is truncated")
    if not is_response:
        return _reject(page, "not_a_response", f"a {page.record_type} record")
    if headers.get("WARC-Truncated"):
        return _reject(page, "truncated_record", f"payload cut by the crawler ({headers.get('WARC-Truncated')})")
    http = HeaderMap()
    try:
        payload = block[http.parse(io.BytesIO(block)):]
    except OSError as err:
        return _reject(page, "undecodable", f"unparseable HTTP headers: {err}")
    if http.status_code != 200:
        return _reject(page, "http_status", f"HTTP {http.status_code} {http.reason_phrase or ''}".strip())
    content_type = http.get("Content-Type") or headers.get("WARC-Identified-Payload-Type") or ""
    mime, _, params = content_type.partition(";")
    if mime.strip().lower() not in HTML_TYPES:
        return _reject(page, "not_html", f"Content-Type {content_type or 'missing'!r}")
    try:
        payload = _decoded_body(payload, http)
    except (OSError, ValueError, zlib.error) as err:
        return _reject(page, "undecodable", str(err), raw=payload)
    return _decode_text(page, payload, _charset(params))


def _decoded_body(payload: bytes, http: HeaderMap) -> bytes:
    """The payload with its transfer and content encodings undone."""
    if "chunked" in (http.get("Transfer-Encoding") or "").lower():
        payload = ChunkedReader(io.BytesIO(payload)).read()
    for coding in reversed([c.strip().lower() for c in (http.get("Content-Encoding") or "").split(",")]):
        if coding in ("", "identity"):
            continue
        if coding == "deflate":
            payload = zlib.decompress(payload)
        elif coding in _CONTENT_DECODERS:
            payload = _CONTENT_DECODERS[coding](io.BytesIO(payload)).read()
        else:
            raise ValueError(f"unsupported Content-Encoding {coding!r}")
    return payload


def _decode_text(page: Page, payload: bytes, declared: str | None) -> Page:
    """Decoded strictly: the HTTP charset, else the page's meta charset or the one detected."""
    def candidates():
        if declared:
            yield declared
        yield detect_encoding(payload, from_html_meta=True)  # only when needed: it costs

    tried = []
    for charset in candidates():
        if charset in tried:
            continue
        tried.append(charset)
        try:
            page.html, page.charset = payload.decode(charset).removeprefix("\ufeff"), charset
            return page
        except (UnicodeDecodeError, LookupError):
            continue
    return _reject(page, "undecodable", f"not valid text in {' or '.join(tried) or 'any detected charset'}",
                   raw=payload)


def _charset(params: str) -> str | None:
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            try:
                return codecs.lookup(value.strip().strip("\"'")).name
            except LookupError:
                return None
    return None


def _reject(page: Page, reason: str, detail: str, raw: bytes | None = None) -> Page:
    page.reason, page.detail, page.raw = reason, detail, raw
    return page


def _unbracket(value: str | None) -> str | None:
    """`<urn:uuid:...>` -> `urn:uuid:...` (WARC 1.0 writers bracket ids and URIs)."""
    return value[1:-1] if value and value.startswith("<") and value.endswith(">") else value


def extract(html: str, extractor: str, url: str | None = None) -> tuple[str, str | None]:
    """(main text, page title) of an HTML page. trafilatura runs as FineWeb ran it (precision over
    recall, no comments) but without its cross-page deduplication, which would make a page's text
    depend on the pages a worker saw before it; the title is Resiliparse's either way (trafilatura's
    metadata extraction would double its time)."""
    tree = HTMLTree.parse(html)
    if extractor == "trafilatura":
        import trafilatura

        text = trafilatura.extract(html, url=url, favor_precision=True, include_comments=False, deduplicate=False)
        return (text or "").strip(), (tree.title or None)
    text = extract_plain_text(tree, preserve_formatting=True, main_content=True, list_bullets=True,
                              alt_texts=False, links=False, form_fields=False, noscript=False, comments=False)
    return text.strip(), (tree.title or None)
