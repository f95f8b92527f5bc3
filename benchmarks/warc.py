"""WARC ingest on one core: Resiliparse (winnow's default) vs trafilatura main-text extraction,
and datatrove's WarcReader + Trafilatura extractor (FineWeb's pipeline) as the peer.

The two real WARC files in ../shared/data/web/dolma_test_fixtures (37 HTML pages among 82 records)
are written out again and again, each copy with fresh record ids, into one WARC.gz of at least
`--records` records. Each extractor then runs winnow's own ingest (FastWARC reading, charset
decoding, extraction, the document checks) over it in a fresh process, so the peak memory
(ru_maxrss) is that run's alone. datatrove runs its reader (warcio) and extractor (trafilatura in
a sandbox process, `favour_precision=True` as FineWeb ran it, its default 1 s timeout per page,
trafilatura's cross-page deduplication off since the pages repeat) on the same file; its
peak is the main process's plus the sandbox's. The default extractor also runs on a file a quarter
the size: its peak memory should not follow the file size (records are streamed).

    .venv/bin/python benchmarks/warc.py [--records 20000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "data" / "web" / "dolma_test_fixtures"
WARCS = ["warc__sample-0000.warc.gz", "warc__sample-0001.warc.gz"]


def build_warc(path: Path, records: int) -> int:
    """Copies of the fixtures' records (new ids each copy) until `records`; returns the record count."""
    from fastwarc.warc import ArchiveIterator

    from winnow.flows.demo import write_warc

    specs = []
    for name in WARCS:
        with open(FIXTURES / name, "rb") as f:
            for record in ArchiveIterator(f, parse_http=False):
                headers = {k: v for k, v in record.headers.items()
                           if k not in ("WARC-Record-ID", "WARC-Date", "WARC-Type", "Content-Length")}
                specs.append({"type": record.headers.get("WARC-Type"), "block": record.reader.read(),
                              "headers": headers})
    copies = -(-records // len(specs))
    write_warc(path, specs * copies)
    return len(specs) * copies


def worker(extractor: str, path: str) -> None:
    """Ingest the file with one extractor; prints a JSON line with the counts, time and peak memory."""
    from winnow.schemas.config import InputConfig
    from winnow.stages.base import RunContext
    from winnow.stages.ingest import Ingest, IngestConfig
    from winnow.storage.fs import resolve

    root = str(Path(path).parent)
    stage = Ingest(IngestConfig(html_extractor=extractor), RunContext(input=InputConfig(uri=root), input_root=root))
    records = kept = 0
    reasons: dict[str, int] = {}
    start = time.perf_counter()
    for result in stage.process_shard(resolve(path), 1000):
        records += result.rows_in
        kept += result.kept.num_rows
        for reason in result.rejects.column("reject_reason").to_pylist():
            reasons[reason] = reasons.get(reason, 0) + 1
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"records": records, "pages": kept, "seconds": seconds, "peak_mib": peak, "rejects": reasons}))


def datatrove_worker(path: str) -> None:
    """datatrove's WarcReader piped into its Trafilatura extractor; the same JSON line as `worker`."""
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.readers import WarcReader

    reader = WarcReader(str(Path(path).parent), glob_pattern=Path(path).name)
    start = time.perf_counter()
    # deduplicate=False: trafilatura's cache of seen paragraphs would empty the repeated copies
    pages = sum(1 for doc in Trafilatura(favour_precision=True, deduplicate=False).run(reader.run()) if doc.text)
    seconds = time.perf_counter() - start
    peak = sum(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
    print(json.dumps({"records": None, "pages": pages, "seconds": seconds, "peak_mib": peak, "rejects": {}}))


def run(extractor: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", extractor, str(path)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--worker", nargs=2, metavar=("EXTRACTOR", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return datatrove_worker(args.worker[1]) if args.worker[0] == "datatrove" else worker(*args.worker)
    if not FIXTURES.exists():
        sys.exit(f"needs the shared WARC fixtures in {FIXTURES}")
    with tempfile.TemporaryDirectory() as tmp:
        big, small = Path(tmp) / "big.warc.gz", Path(tmp) / "small.warc.gz"
        n_big, n_small = build_warc(big, args.records), build_warc(small, args.records // 4)
        print(f"{n_big:,} records ({big.stat().st_size / 2**20:.0f} MiB WARC.gz), one core, batches of 1,000")
        results = {name: run(name, big) for name in ("resiliparse", "trafilatura", "datatrove")}
        quarter = run("resiliparse", small)
    labels = {"resiliparse": "winnow, resiliparse", "trafilatura": "winnow, trafilatura",
              "datatrove": "datatrove, trafilatura"}
    for name, r in results.items():
        records = f"{n_big / r['seconds']:>8,.1f} records/s"
        print(f"{labels[name]:<23} {r['pages'] / r['seconds']:>8,.1f} pages/s  {records}  {r['seconds']:>7.1f} s  "
              f"peak {r['peak_mib']:>6,.0f} MiB  {r['pages']:,} pages  {r['rejects']}")
    rate = {name: r["pages"] / r["seconds"] for name, r in results.items()}
    print(f"resiliparse / trafilatura in winnow: {rate['resiliparse'] / rate['trafilatura']:.1f}x pages/s; "
          f"winnow (resiliparse) / datatrove: {rate['resiliparse'] / rate['datatrove']:.1f}x; "
          f"winnow (trafilatura) / datatrove: {rate['trafilatura'] / rate['datatrove']:.2f}x")
    print(f"resiliparse peak memory: {quarter['peak_mib']:,.0f} MiB on {n_small:,} records, "
          f"{results['resiliparse']['peak_mib']:,.0f} MiB on {n_big:,}")


if __name__ == "__main__":
    main()
