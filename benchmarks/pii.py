"""PII redaction throughput on one core: winnow's `pii` stage vs datatrove's `PIIFormatter`.

datatrove redacts e-mail addresses and IP addresses only (regular expressions, IPs checked by
`ipaddress`); winnow is timed on those two kinds (the like-for-like ratio) and on all four (phone
numbers through libphonenumber's matcher, card numbers with the Luhn check). Same documents (the
shared C4 samples repeated), one process, record batches of 1,000 documents.

    .venv/bin/python benchmarks/pii.py [--docs 20000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from texts import c4_texts  # noqa: E402 - the benchmarks' text, real or generated


def table_of(texts: list[str]) -> pa.Table:
    from winnow.schemas.documents import DOCUMENT_SCHEMA

    return pa.Table.from_pylist([{"id": str(i), "text": t, "source": "c4"} for i, t in enumerate(texts)],
                                schema=DOCUMENT_SCHEMA)


def time_winnow(texts: list[str], kinds: list[str]) -> tuple[float, dict]:
    from winnow.stages.pii import Pii, PiiConfig

    stage = Pii(PiiConfig(name="pii", kinds=kinds))
    tables = [table_of(texts[i:i + 1000]) for i in range(0, len(texts), 1000)]
    counters: dict = {}
    start = time.perf_counter()
    for table in tables:
        for kind, n in stage.apply(table).counters.items():
            counters[kind] = counters.get(kind, 0) + n
    return time.perf_counter() - start, counters


def time_datatrove(texts: list[str]) -> float:
    from datatrove.pipeline.formatters import PIIFormatter

    formatter = PIIFormatter(only_remove_public_ips=False)
    start = time.perf_counter()
    for text in texts:
        formatter.format(text)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=20_000)
    args = parser.parse_args()
    base = c4_texts()
    texts = (base * (args.docs // len(base) + 1))[: args.docs]
    print(f"{len(texts):,} documents, {sum(map(len, texts)) / 1e6:.1f} M characters, one core")
    dt = time_datatrove(texts)
    two, found_two = time_winnow(texts, ["email", "ip"])
    four, found_four = time_winnow(texts, ["email", "credit_card", "ip", "phone"])
    print(f"datatrove PIIFormatter (e-mail, IP):  {len(texts) / dt:>9,.0f} docs/s")
    print(f"winnow pii (e-mail, IP):              {len(texts) / two:>9,.0f} docs/s  -> {dt / two:.2f}x datatrove  "
          f"{found_two}")
    print(f"winnow pii (e-mail, IP, phone, card): {len(texts) / four:>9,.0f} docs/s  -> {dt / four:.2f}x datatrove  "
          f"{found_four}")


if __name__ == "__main__":
    main()
