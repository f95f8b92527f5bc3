"""URL filtering: drop documents by domain blocklists, URL substrings and top-level domains.

A blocklist file holds one entry per line (`#` starts a comment): a domain, which also blocks its
sub-domains (`example.com` blocks `ads.example.com`, not `badexample.com`), or a URL, which blocks
the URLs it prefixes once the scheme and `www.` are set aside (`example.com/casino` blocks
`https://www.example.com/casino/slots?x=1`). Hosts are compared lower-cased, without port or a
trailing dot. The reason names the list (`blocklist:<file name>`) and the detail the entry.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
from pydantic import Field

from winnow.schemas.config import StageConfig
from winnow.stages.base import DocumentStage, StageResult, require_file
from winnow.storage.fs import resolve


class UrlFilterConfig(StageConfig):
    """Drop documents whose URL is on a blocklist, contains a blocked substring or has a blocked TLD."""

    name: Literal["url_filter"] = "url_filter"
    blocklists: list[str] = Field([], description="files (local or s3://) of domains or URLs, one per line")
    url_substrings: list[str] = Field([], description="drop URLs containing any of these (case-insensitive)")
    tlds: list[str] = Field([], description="top-level domains to drop, e.g. ['xyz', 'zip'] (a leading dot is fine)")
    missing_url: Literal["keep", "drop"] = Field("keep", description="documents without a URL")


def host_and_path(url: str) -> tuple[str, str]:
    """The URL's host (lower case, no port, no trailing dot, no leading `www.`) and host+path+query."""
    parts = urlsplit(url if "//" in url.split("?")[0] else f"//{url}")
    host = (parts.hostname or "").rstrip(".").removeprefix("www.")
    rest = parts.path + (f"?{parts.query}" if parts.query else "")
    return host, host + rest


class UrlFilter(DocumentStage):
    Config = UrlFilterConfig

    def __init__(self, config: UrlFilterConfig, run=None):
        super().__init__(config, run)
        for path in config.blocklists:
            require_file(self.name, path, "blocklist")
        self.tlds = frozenset(t.lower().lstrip(".") for t in config.tlds)

    def setup(self) -> tuple[dict[str, tuple[str, str]], list[tuple[str, str, str]]]:
        """Blocked domains (domain -> (list, entry)) and blocked URL prefixes ((prefix, list, entry)), from
        every blocklist file; the first list naming an entry is the one a rejection names."""
        domains: dict[str, tuple[str, str]] = {}
        prefixes: list[tuple[str, str, str]] = []
        for path in self.config.blocklists:
            listed = PurePosixPath(path).name
            for line in resolve(path).read_bytes().decode().splitlines():
                entry = line.split("#", 1)[0].strip()
                if not entry:
                    continue
                host, prefix = host_and_path(entry)
                if prefix.rstrip("/") == host:
                    domains.setdefault(host, (listed, entry))
                else:
                    prefixes.append((prefix.lower(), listed, entry))
        return domains, prefixes

    def blocked(self, url: str | None) -> tuple[str, str] | None:
        """(reason, detail) when the URL is blocked, else None."""
        cfg = self.config
        if not url:
            return ("missing_url", "the document has no URL") if cfg.missing_url == "drop" else None
        domains, prefixes = self.loaded
        host, full = host_and_path(url)
        labels = host.split(".")
        for i in range(len(labels)):  # the host, then each parent domain
            hit = domains.get(".".join(labels[i:]))
            if hit:
                return f"blocklist:{hit[0]}", f"{hit[1]} (host {host})"
        lowered = full.lower()
        for prefix, listed, entry in prefixes:
            if lowered.startswith(prefix):
                return f"blocklist:{listed}", entry
        lowered_url = url.lower()
        for sub in cfg.url_substrings:
            if sub.lower() in lowered_url:
                return "url_substring", sub
        if host and labels[-1] in self.tlds:
            return "tld", f".{labels[-1]}"
        return None

    def apply(self, table: pa.Table) -> StageResult:
        verdicts = [self.blocked(url) for url in table.column("url").to_pylist()]
        keep = np.array([v is None for v in verdicts], dtype=bool)
        dropped = [v for v in verdicts if v is not None]
        return StageResult.of(self.name, table.num_rows, table.filter(pa.array(keep)), table.filter(pa.array(~keep)),
                              [reason for reason, _ in dropped], [detail for _, detail in dropped])
