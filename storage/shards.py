"""Streaming shard readers and the atomic shard writer.

Readers yield record batches (Parquet) or batches of raw lines (JSONL, plain/.gz/.zst) so a
worker's memory stays bounded by the batch size, never by the shard size.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tempfile
import uuid
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import zstandard

from winnow.storage.fs import Location, StorageError, retry_transient

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
COMPRESSION_SUFFIXES = (".gz", ".zst", ".zstd")
S3_READ_BYTES = 8 << 20


def detect_format(loc: Location) -> str:
    name = loc.path.lower()
    for comp in COMPRESSION_SUFFIXES:
        name = name.removesuffix(comp)
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(".warc"):
        return "warc"
    if name.endswith(".arrow"):
        return "arrow"
    raise ValueError(f"cannot tell the format of {loc.uri}: expected .parquet, .arrow, .warc or .jsonl/.json "
                     "(text formats optionally .gz/.zst)")


def iter_parquet_batches(loc: Location, batch_size: int, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    with loc.open_read() as f:
        # Buffered page reads: memory follows the batch size, not the (possibly huge) row group.
        reader = pq.ParquetFile(f, pre_buffer=False, buffer_size=1 << 20)
        yield from reader.iter_batches(batch_size=batch_size, columns=columns)


def iter_arrow_batches(loc: Location, batch_size: int) -> Iterator[pa.RecordBatch]:
    """Batches of an Arrow IPC stream (what `datasets` writes) or IPC file, at most `batch_size` rows."""
    with loc.open_read() as f:
        head = f.read(6)
        f.seek(0)
        reader = pa.ipc.open_file(f) if head == b"ARROW1" else pa.ipc.open_stream(f)
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches)) if head == b"ARROW1" else reader
        for batch in batches:
            for start in range(0, batch.num_rows, batch_size):
                yield batch.slice(start, batch_size)


def parquet_rows(loc: Location) -> int:
    """A Parquet file's row count, from its footer (no data is read)."""
    with loc.open_read() as f:
        return pq.ParquetFile(f).metadata.num_rows


def parquet_schema(loc: Location) -> pa.Schema:
    with loc.open_read() as f:
        return pq.read_schema(f)


def iter_jsonl_lines(loc: Location, batch_size: int, chunk_bytes: int = 1 << 16) -> Iterator[list[bytes]]:
    """Raw lines (without the newline) in batches; .gz/.zst are decompressed while streaming.

    A truncated or corrupt compressed file raises CorruptInputError after the lines before the
    damage have been yielded.
    """
    batch: list[bytes] = []
    rest = b""
    try:
        with loc.open_read() as raw:
            # every read of an S3 object is a GET: read it in large ranges, hand out small chunks
            stream = _decompressed(raw if loc.is_local else io.BufferedReader(raw, S3_READ_BYTES), loc.path)
            while chunk := stream.read(chunk_bytes):
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    batch.append(line.removesuffix(b"\r"))
                    if len(batch) >= batch_size:
                        yield batch
                        batch = []
    except (OSError, EOFError, zstandard.ZstdError, pa.ArrowInvalid) as err:
        if isinstance(err, (FileNotFoundError, StorageError)):
            raise
        if batch:
            yield batch
        raise CorruptInputError(f"{loc.uri}: corrupt or truncated file: {err}") from err
    if rest:
        batch.append(rest.removesuffix(b"\r"))
    if batch:
        yield batch


def _decompressed(raw, path: str):
    """A readable stream of the file's content, by the compression its name says."""
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)
    if path.endswith((".zst", ".zstd")):
        return zstandard.ZstdDecompressor().stream_reader(raw)
    return raw


class CorruptInputError(IOError):
    """An input file cannot be read to its end."""


class _HashingSink:
    """File-like wrapper that hashes and counts bytes as pyarrow writes them."""

    def __init__(self, sink):
        self.sink, self.sha256, self.nbytes, self.closed = sink, hashlib.sha256(), 0, False

    def write(self, data) -> int:
        data = bytes(data)
        self.sha256.update(data)
        self.nbytes += len(data)
        self.sink.write(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.nbytes


class ShardWriter:
    """Writes one Parquet shard that becomes visible only when complete.

    The file is written under a temporary name (beside the target locally, in the system temp
    directory for S3), fsynced, then renamed into place or uploaded whole, so a reader never
    sees a partial shard. `abort()` leaves nothing behind.
    """

    def __init__(self, loc: Location, schema: pa.Schema, compression: str = "zstd", **parquet_options):
        self.loc, self.schema, self.rows = loc, schema, 0
        self._tmp = temp_path_for(loc)
        self._stream = open(self._tmp, "wb")
        self._sink = _HashingSink(self._stream)
        self._writer = pq.ParquetWriter(pa.PythonFile(self._sink, mode="w"), schema, compression=compression,
                                        **parquet_options)

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        if table.num_rows:
            if isinstance(table, pa.RecordBatch):
                table = pa.Table.from_batches([table])
            self._writer.write_table(table.cast(self.schema) if table.schema != self.schema else table)
            self.rows += table.num_rows

    def commit(self) -> dict:
        """Finish the file and make it visible; returns rows, bytes and sha256."""
        self._writer.close()
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self._stream.close()
        publish(self._tmp, self.loc)
        return {"rows": self.rows, "bytes": self._sink.nbytes, "sha256": self._sink.sha256.hexdigest()}

    def abort(self) -> None:
        try:
            self._writer.close()
        except Exception:  # noqa: BLE001 - already failing; only clean up
            pass
        self._stream.close()
        if os.path.exists(self._tmp):
            os.remove(self._tmp)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def temp_path_for(loc: Location) -> str:
    """A fresh local temporary name for a file bound for `loc`: beside it locally (so `publish` is a
    rename), in the system temp directory for S3."""
    tmp_dir = os.path.dirname(loc.path) if loc.is_local else tempfile.gettempdir()
    os.makedirs(tmp_dir, exist_ok=True)
    return os.path.join(tmp_dir, f".tmp-{uuid.uuid4().hex}-{os.path.basename(loc.path)}")


def publish(tmp: str, loc: Location) -> None:
    """Make a finished temporary file visible at `loc` whole: renamed into place, or uploaded as one
    object and removed."""
    if loc.is_local:
        os.replace(tmp, loc.path)
        return
    try:
        upload_file(tmp, loc)
    finally:
        os.remove(tmp)


def upload_file(local_path: str, loc: Location) -> None:
    """Copy a finished local file to a (remote) location as one object, and see it there at its size
    before returning: a shard the ledger records must be readable (a lost upload is uploaded again)."""
    size = os.path.getsize(local_path)

    def upload() -> None:
        pafs.copy_files(local_path, loc.path, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=loc.fs)
        info = loc.fs.get_file_info(loc.path)
        if info.type != pafs.FileType.File or info.size != size:
            found = "nothing" if info.type == pafs.FileType.NotFound else f"{info.size} bytes"
            raise OSError(f"uploaded {size} bytes to {loc.uri} but the store has {found} there")

    retry_transient(upload)
