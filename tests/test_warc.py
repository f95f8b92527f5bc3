"""WARC input: every record is a page or a reject with its reason; extraction checked by hand."""

import json

import pyarrow as pa
import pytest
from fastwarc.warc import ArchiveIterator

from conftest import data_path
from winnow.flows.demo import html_page, http_response, write_warc
from winnow.schemas.config import InputConfig
from winnow.schemas.documents import validate_documents
from winnow.stages.base import RunContext
from winnow.stages.ingest import Ingest, IngestConfig
from winnow.storage.fs import resolve

FIXTURES = "web"
EXTRACTORS = ["resiliparse", "trafilatura"]


def ingest_warc(path, extractor="resiliparse", batch_size=10, counters: dict | None = None, **ingest):
    root = str(path.parent)
    stage = Ingest(IngestConfig(html_extractor=extractor, **ingest),
                   RunContext(input=InputConfig(uri=root), input_root=root))
    results = list(stage.process_shard(resolve(str(path)), batch_size))
    kept = pa.concat_tables([r.kept for r in results])
    rejects = pa.concat_tables([r.rejects for r in results])
    assert sum(r.rows_in for r in results) == kept.num_rows + rejects.num_rows
    validate_documents(kept)
    counters = {} if counters is None else counters
    for key, n in ((k, n) for r in results for k, n in r.counters.items()):
        counters[key] = counters.get(key, 0) + n
    return kept, rejects


def records_by_fastwarc(path):
    """(type, id, url) of every record, as FastWARC reads the file on its own."""
    with open(path, "rb") as f:
        return [(r.headers.get("WARC-Type"), r.record_id.strip("<>"),
                 (r.headers.get("WARC-Target-URI") or "").strip("<>")) for r in ArchiveIterator(f, parse_http=False)]


@pytest.mark.parametrize("name,responses", [("warc__sample-0000.warc.gz", 22), ("warc__sample-0001.warc.gz", 15)])
def test_every_record_of_a_real_warc_is_a_document_or_a_reject(name, responses):
    path = data_path(f"{FIXTURES}/{name}")
    records = records_by_fastwarc(path)
    kept, rejects = ingest_warc(path)

    assert kept.num_rows + rejects.num_rows == len(records)
    response_ids = [rid for kind, rid, _ in records if kind == "response"]
    assert kept.num_rows == len(response_ids) == responses
    assert kept.column("id").to_pylist() == response_ids  # ids are the WARC record ids, in file order
    urls = {rid: url for _, rid, url in records}
    assert kept.column("url").to_pylist() == [urls[rid] for rid in response_ids]
    assert set(rejects.column("reject_reason").to_pylist()) == {"not_a_response"}
    expected = sorted(f"a {kind} record" for kind, _, _ in records if kind != "response")
    assert sorted(rejects.column("reject_detail").to_pylist()) == expected
    for meta in map(json.loads, kept.column("meta").to_pylist()):
        assert meta["warc_record_id"] and meta["warc_date"].startswith("2024-04-25T")


def test_non_response_records_can_be_counted_instead_of_rejected():
    path = data_path(f"{FIXTURES}/warc__sample-0000.warc.gz")
    counters: dict = {}
    kept, rejects = ingest_warc(path, counters=counters, non_response_records="count")
    full, _ = ingest_warc(path)
    assert kept == full and rejects.num_rows == 0
    types = [kind for kind, _, _ in records_by_fastwarc(path) if kind != "response"]
    assert counters == {f"warc_skipped:{t}": types.count(t) for t in set(types)}
    assert counters["warc_skipped:request"] == 22


@pytest.mark.parametrize("extractor", EXTRACTORS)
def test_extraction_keeps_title_and_body_and_drops_navigation_and_scripts(extractor):
    kept, _ = ingest_warc(data_path(f"{FIXTURES}/warc__sample-0001.warc.gz"), extractor)
    pages = {row["url"]: row for row in kept.to_pylist()}

    faq = pages["https://commoncrawl.org/faq"]
    assert json.loads(faq["meta"])["title"] == "Common Crawl - FAQ"
    assert "Frequently asked questions" in faq["text"]
    assert "Common Crawl is a 501(c)(3) non-profit organization dedicated to providing a copy of the Internet" \
        in faq["text"]
    assert "CCBot is a Nutch-based web crawler that makes use of the Apache Hadoop project." in faq["text"]
    assert "Infra Status" not in faq["text"]  # the navigation bar
    assert "w-mod-" not in faq["text"] and "getElementById" not in faq["text"]  # inline scripts
    assert '"@type": "FAQPage"' not in faq["text"]  # JSON-LD

    kept0, _ = ingest_warc(data_path(f"{FIXTURES}/warc__sample-0000.warc.gz"), extractor)
    home = {row["url"]: row for row in kept0.to_pylist()}["https://soldaini.net/"]
    assert json.loads(home["meta"])["title"] == "Luca Soldaini"
    assert "My name is Luca Soldaini" in home["text"]
    assert "Raccoons are the best." in home["text"]
    assert "<p>" not in home["text"] and "<div" not in home["text"]


def test_a_truncated_copy_ends_in_one_corrupt_file_reject_and_loses_nothing_else(tmp_path):
    source = data_path(f"{FIXTURES}/warc__sample-0000.warc.gz")
    full, full_rejects = ingest_warc(source)
    data = source.read_bytes()
    path = tmp_path / "cut.warc.gz"
    # cuts through WARC headers, HTTP headers, payloads and the last record (a cut through nothing but
    # the last gzip member's 8-byte trailer loses no record, and FastWARC does not report it)
    for cut in [*(len(data) * k // 50 for k in range(1, 50)), len(data) - 200]:
        path.write_bytes(data[:cut])
        check_truncated_copy(path, source, full, full_rejects)


def check_truncated_copy(path, source, full, full_rejects):
    kept, rejects = ingest_warc(path)
    reasons = rejects.column("reject_reason").to_pylist()
    assert reasons[-1] == "corrupt_file" and reasons.count("corrupt_file") == 1
    read = kept.num_rows + rejects.num_rows - 1  # records before the damage
    assert f"rows from {read} on could not be read" in rejects.column("reject_detail")[-1].as_py()
    # what was read is exactly the full file's first records: the same documents, the same rejects
    assert kept.column("id").to_pylist() == full.column("id").to_pylist()[: kept.num_rows]
    assert kept.column("text").to_pylist() == full.column("text").to_pylist()[: kept.num_rows]
    assert rejects.column("id").to_pylist()[:-1] == full_rejects.column("id").to_pylist()[: rejects.num_rows - 1]
    assert read < len(records_by_fastwarc(source))


def test_records_that_are_not_whole_html_pages_are_rejected_with_their_reasons(tmp_path):
    page = html_page("A page title line\nThe first paragraph of the page body is here.", "example.test").encode()
    gzip_body = __import__("gzip").compress(page)
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(page), page)
    records = [
        {"type": "warcinfo", "block": b"software: test\r\n"},
        {"type": "request", "url": "https://example.test/", "block": b"GET / HTTP/1.1\r\n\r\n"},
        {"type": "response", "url": "https://example.test/ok", "block": http_response(page)},
        {"type": "response", "url": "https://example.test/moved", "block": http_response(page, status="301 Moved")},
        {"type": "response", "url": "https://example.test/a.pdf",
         "block": http_response(b"%PDF-1.4", "application/pdf")},
        {"type": "response", "url": "https://example.test/cut", "block": http_response(page[:100]),
         "headers": {"WARC-Truncated": "length"}},
        {"type": "response", "url": "https://example.test/gz", "block": b"HTTP/1.1 200 OK\r\nContent-Type: text/html"
         b"\r\nContent-Encoding: gzip\r\n\r\n" + gzip_body},
        {"type": "response", "url": "https://example.test/chunked", "block": b"HTTP/1.1 200 OK\r\nContent-Type: "
         b"text/html\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked},
        {"type": "response", "url": "https://example.test/bad-gzip", "block": b"HTTP/1.1 200 OK\r\nContent-Type: "
         b"text/html\r\nContent-Encoding: gzip\r\n\r\nnot gzip at all"},
        {"type": "response", "url": "https://example.test/latin", "block": http_response(
            html_page("Caf\u00e9 page\nA cr\u00e8me br\u00fbl\u00e9e for the caf\u00e9.", "x").encode("latin-1"),
            "text/html; charset=ISO-8859-1")},
        {"type": "response", "url": "https://example.test/empty",
         "block": http_response(b"<html><body></body></html>")},
        {"type": "metadata", "url": "https://example.test/ok", "block": b"fetchTimeMs: 12\r\n"},
    ]
    path = tmp_path / "mixed.warc.gz"
    write_warc(path, records)
    kept, rejects = ingest_warc(path)

    assert kept.column("url").to_pylist() == [f"https://example.test/{p}" for p in ("ok", "gz", "chunked", "latin")]
    texts = kept.column("text").to_pylist()
    assert all("The first paragraph of the page body is here." in t for t in texts[:3])
    assert texts[0] == texts[1] == texts[2]  # content and transfer encodings undone
    assert "A cr\u00e8me br\u00fbl\u00e9e for the caf\u00e9." in texts[3]
    assert json.loads(kept.column("meta")[3].as_py())["charset"] == "iso8859-1"
    assert "Home" not in texts[0] and "Copyright" not in texts[0]  # navigation and footer

    by_url = {r["url"]: (r["reject_reason"], r["reject_detail"]) for r in rejects.to_pylist()}
    assert by_url == {
        None: ("not_a_response", "a warcinfo record"),
        "https://example.test/": ("not_a_response", "a request record"),
        "https://example.test/moved": ("http_status", "HTTP 301 Moved"),
        "https://example.test/a.pdf": ("not_html", "Content-Type 'application/pdf'"),
        "https://example.test/cut": ("truncated_record", "payload cut by the crawler (length)"),
        "https://example.test/bad-gzip": by_url["https://example.test/bad-gzip"],
        "https://example.test/empty": ("empty_text", "text is empty or whitespace"),
        "https://example.test/ok": ("not_a_response", "a metadata record"),
    }
    assert by_url["https://example.test/bad-gzip"][0] == "undecodable"
    bad = rejects.filter(pa.compute.equal(rejects["reject_reason"], "undecodable"))
    assert bad.column("raw")[0].as_py() == b"not gzip at all"  # the payload is kept for inspection


def test_plain_and_zstd_warc_read_as_gzip(tmp_path):
    import gzip

    import zstandard

    source = data_path(f"{FIXTURES}/warc__sample-0001.warc.gz")
    data = gzip.decompress(source.read_bytes())
    (tmp_path / "a.warc").write_bytes(data)
    (tmp_path / "a.warc.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    expected, expected_rejects = ingest_warc(source)
    for name in ("a.warc", "a.warc.zst"):
        kept, rejects = ingest_warc(tmp_path / name)
        assert kept.select(["id", "text", "url"]) == expected.select(["id", "text", "url"])
        assert rejects.column("id") == expected_rejects.column("id")
