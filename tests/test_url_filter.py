"""url_filter: blocklists of domains (sub-domains included) and URLs, URL substrings, TLDs."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from support import run_stage
from winnow.runtime import RuntimeOptions, Shard
from winnow.schemas.documents import DOCUMENT_SCHEMA
from winnow.stages.url_filter import UrlFilter, UrlFilterConfig, host_and_path
from winnow.storage.fs import resolve

URLS = {  # url -> (reason, detail: the entry as the list writes it) expected; None: kept
    "https://casino-example.test/slots": ("blocklist:gambling.txt", "casino-example.test (host casino-example.test)"),
    "http://www.ads.Tracker-Example.test:8080/x": ("blocklist:gambling.txt",
                                                   "TRACKER-example.test (host ads.tracker-example.test)"),
    "https://notcasino-example.test/": None,  # a different domain that ends with the same letters
    "https://news.example.org/casino/poker?id=3": ("blocklist:paths.txt", "https://www.news.example.org/casino"),
    "https://news.example.org/casinos-history": ("blocklist:paths.txt", "https://www.news.example.org/casino"),
    "https://news.example.org/politics": None,
    "https://shop.example.com/buy?ref=AFFILIATE-77": ("url_substring", "affiliate"),
    "https://files.example.zip/readme": ("tld", ".zip"),
    "https://example.co.uk/zip/file": None,
    "": None,  # no URL: kept by default
}


def with_urls(urls: list[str | None], prefix: str = "") -> pa.Table:
    return pa.Table.from_pylist([{"id": f"{prefix}{i}", "text": "t", "source": "s", "url": u}
                                 for i, u in enumerate(urls)], schema=DOCUMENT_SCHEMA)


def write_lists(tmp_path):
    (tmp_path / "gambling.txt").write_text("# gambling and ads\ncasino-example.test\n\nTRACKER-example.test  # ads\n")
    (tmp_path / "paths.txt").write_text("https://www.news.example.org/casino\n")
    return [str(tmp_path / "gambling.txt"), str(tmp_path / "paths.txt")]


def test_hosts_are_normalised():
    assert host_and_path("HTTPS://WWW.Example.COM.:443/a?b=1") == ("example.com", "example.com/a?b=1")
    assert host_and_path("example.com/path") == ("example.com", "example.com/path")


def test_each_rule_with_its_list_and_entry(tmp_path):
    cfg = UrlFilterConfig(name="url_filter", blocklists=write_lists(tmp_path), url_substrings=["affiliate"],
                          tlds=[".zip"])
    urls = list(URLS)
    table = with_urls([u or None for u in urls])
    result = UrlFilter(cfg).apply(table)
    got = {urls[int(r["id"])]: (r["reject_reason"], r["reject_detail"]) for r in result.rejects.to_pylist()}
    assert got == {u: v for u, v in URLS.items() if v}
    assert sorted(result.kept.column("id").to_pylist(), key=int) == [str(i) for i, u in enumerate(urls) if not URLS[u]]
    dropping = UrlFilter(cfg.model_copy(update={"missing_url": "drop"})).apply(table)
    assert ("missing_url", "the document has no URL") in [(r["reject_reason"], r["reject_detail"])
                                                          for r in dropping.rejects.to_pylist()]


@pytest.mark.usefixtures("ray_local")
def test_runs_on_ray_over_shards_and_counts_add_up(tmp_path):
    shards = []
    urls = [u for u in URLS if u] * 20
    for s in range(2):
        path = tmp_path / "in" / f"part-{s}.parquet"
        path.parent.mkdir(exist_ok=True)
        part = urls[s::2]
        pq.write_table(with_urls(part, f"{s}-"), path)
        shards.append(Shard(path.stem, resolve(str(path))))
    cfg = UrlFilterConfig(name="url_filter", blocklists=write_lists(tmp_path), url_substrings=["affiliate"],
                          tlds=["zip"])
    manifest, _ = run_stage(UrlFilter(cfg), shards, resolve(str(tmp_path / "out")), "h",
                            RuntimeOptions(run_id="t", progress=False))
    assert manifest.rows_in == len(urls) == manifest.rows_out + manifest.rows_rejected
    blocked = sum(1 for u in urls if URLS[u])
    assert manifest.rows_rejected == blocked and manifest.rejected_by_reason == {
        "blocklist:gambling.txt": 40, "blocklist:paths.txt": 40, "tld": 20, "url_substring": 20}
