"""URIs, shard listing, streaming reads, atomic shard writes, manifests and the resume ledger."""

from winnow.storage.fs import Location, resolve
from winnow.storage.shards import CorruptInputError, ShardWriter, detect_format, iter_jsonl_lines, iter_parquet_batches

__all__ = [
    "CorruptInputError",
    "Location",
    "ShardWriter",
    "detect_format",
    "iter_jsonl_lines",
    "iter_parquet_batches",
    "resolve",
]
