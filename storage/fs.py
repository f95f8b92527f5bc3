"""URIs for local paths and s3://, resolved to pyarrow filesystems.

Credentials come from the config (as secrets) or the standard AWS chain; they are passed to
pyarrow and never stored on objects that get logged or written to manifests.
"""

from __future__ import annotations

import fnmatch
import io
import logging
import os
import random
import time
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow.fs as pafs

from winnow.schemas.config import S3Config

log = logging.getLogger("winnow")


@dataclass(frozen=True)
class Location:
    """A filesystem plus a path on it; `uri` is the user-facing name (no credentials)."""

    fs: pafs.FileSystem
    path: str
    uri: str

    def join(self, *parts: str) -> Location:
        """A location under this one; a part that would climb out of it ('..', absolute) is an error."""
        for part in parts:
            pieces = part.split("/")
            if not part or part.startswith("/") or "\\" in part or "\0" in part or \
                    any(p in ("", ".", "..") for p in pieces):
                raise ValueError(f"refusing a path part that could leave {self.uri}: {part!r}")
        path = "/".join([self.path.rstrip("/"), *parts])
        uri = "/".join([self.uri.rstrip("/"), *parts])
        return Location(self.fs, path, uri)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def exists(self) -> bool:
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def mkdir(self) -> None:
        self.fs.create_dir(self.path, recursive=True)

    def open_read(self):
        """A seekable binary file for reading; on S3 it retries the reads that the AWS SDK gives up on."""
        return self.fs.open_input_file(self.path) if self.is_local else RetryingReader(self)

    def read_bytes(self) -> bytes:
        with self.open_read() as f:
            return f.read()

    def write_bytes_atomic(self, data: bytes) -> None:
        """Visible only when complete: temp name + rename locally; one PUT on S3."""
        if self.is_local:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            tmp = f"{self.path}.tmp-{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        else:
            retry_transient(lambda: self._put(data))

    def _put(self, data: bytes) -> None:
        with self.fs.open_output_stream(self.path, compression=None) as f:
            f.write(data)

    def delete(self) -> None:
        info = self.fs.get_file_info(self.path)
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path)
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(self.path)

    def list_files(self, pattern: str = "*") -> list[Location]:
        """Files under this location whose path relative to it (or base name) matches `pattern`."""
        info = self.fs.get_file_info(self.path)
        if info.type == pafs.FileType.File:
            return [self]
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"input not found: {self.uri}")
        base = self.path.rstrip("/") + "/"
        found = []
        for entry in self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True)):
            if entry.type != pafs.FileType.File:
                continue
            rel = entry.path[len(base):] if entry.path.startswith(base) else entry.base_name
            if any(part.startswith((".", "_")) for part in rel.split("/")):
                continue  # hidden files, temp files, manifests
            if fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(entry.base_name, pattern):
                found.append(Location(self.fs, entry.path, self.uri.rstrip("/") + "/" + rel))
        return sorted(found, key=lambda loc: loc.path)

    def size(self) -> int:
        return self.fs.get_file_info(self.path).size


class StorageError(OSError):
    """A storage call that still fails after every retry: the store's problem, not the data's, so
    a shard task meeting it is retried or fails; it never turns the rest of an input into rejects."""


def retry_transient(fn, attempts: int = 5, first_delay_s: float = 0.1):
    """`fn()`, repeated with exponential backoff while it raises an OSError that is not a missing
    object or a refused permission. A second line behind the AWS SDK's own retries, for what they
    let through (see `RetryingReader`; a multipart upload whose last step was throttled once
    too often). Only for idempotent calls: reads, and writes of whole objects."""
    for attempt in range(attempts):
        try:
            return fn()
        except (FileNotFoundError, PermissionError):
            raise
        except OSError as err:
            if attempt == attempts - 1:
                raise StorageError(f"{err} (after {attempts} attempts)") from err
            log.info("S3 call failed (%s); attempt %d of %d", err, attempt + 2, attempts)
            time.sleep(first_delay_s * 2 ** attempt * (1 + random.random()))


class RetryingReader(io.RawIOBase):
    """An S3 object as a seekable file whose ranged reads are retried when they fail transiently.

    The AWS SDK retries throttling (503 SlowDown) itself, except when a ranged read is smaller than
    the error document: the SDK then writes the error body into the caller's fixed-size buffer, the
    write fails, and it reports a non-retryable INTERNAL_FAILURE ("Failed to flush response stream").
    Small reads are routine (Parquet footers, small column chunks, a file's last bytes), so under
    throttling a run would fail on an error that a second attempt fixes. Each read is one ranged GET,
    repeated with backoff after such a failure.
    """

    def __init__(self, loc: Location):
        self.loc, self.pos = loc, 0
        self._file = retry_transient(lambda: loc.fs.open_input_file(loc.path))
        self._size = self._file.size()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def size(self) -> int:
        return self._size

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.pos = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self._size}[whence] + offset
        return self.pos

    def read(self, size: int = -1) -> bytes:
        size = self._size - self.pos if size is None or size < 0 else min(size, self._size - self.pos)
        if size <= 0:
            return b""
        data = retry_transient(lambda: self._file.read_at(size, self.pos))
        self.pos += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


def s3_filesystem(s3: S3Config) -> pafs.S3FileSystem:
    """pyarrow's S3 client, multipart uploads for large objects, and the AWS SDK's retries with
    exponential backoff on SlowDown, 5xx and connection errors, bounded by `max_attempts`.

    The SDK's "default" strategy, not its "standard" one: standard also draws every retry from a
    per-client quota (500 tokens, 5 per retry) and stops retrying once it is spent. A long batch
    job against a throttling store spends it and then fails on its next 503 (measured: 150 of 300
    small writes failed at 30% throttling; none with the default strategy)."""
    kwargs: dict = {"retry_strategy": pafs.AwsDefaultS3RetryStrategy(max_attempts=s3.max_attempts),
                    "connect_timeout": s3.connect_timeout_s, "request_timeout": s3.request_timeout_s}
    endpoint = s3.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    region = s3.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    if s3.access_key_id and s3.secret_access_key:
        kwargs["access_key"] = s3.access_key_id.get_secret_value()
        kwargs["secret_key"] = s3.secret_access_key.get_secret_value()
        if s3.session_token:
            kwargs["session_token"] = s3.session_token.get_secret_value()
    return pafs.S3FileSystem(**kwargs)


def resolve(uri: str, s3: S3Config | None = None) -> Location:
    """`/local/path`, `relative/path`, `file:///path` or `s3://bucket/prefix` -> Location."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"S3 URI needs a bucket: {uri!r}")
        path = f"{parsed.netloc}/{parsed.path.lstrip('/')}".rstrip("/")
        return Location(s3_filesystem(s3 or S3Config()), path, uri.rstrip("/"))
    if parsed.scheme in ("", "file"):
        path = os.path.abspath(parsed.path if parsed.scheme == "file" else uri)
        return Location(pafs.LocalFileSystem(), path, path)
    raise ValueError(f"unsupported URI scheme {parsed.scheme!r} in {uri!r}; use a local path or s3://")
