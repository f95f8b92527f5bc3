"""One run per output: `OUT/_lock.json`, created only if absent, removed when the run ends.

Locally the lock is an `O_CREAT | O_EXCL` file; on S3 a conditional PUT (`If-None-Match: *`), so
two drivers racing for the same output cannot both win. The lock names its owner (user, host,
pid, run id), when it was taken, and a heartbeat the holder refreshes every minute. A second run
refuses with all of that. A lock whose holder is provably dead (same host, process gone: a killed
driver) is taken over, so `winnow run` again simply resumes; any other lock is removed only by
`--break-lock` (the message says when the heartbeat has gone quiet).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator

from winnow.schemas.config import S3Config
from winnow.storage.fs import Location

LOCK = "_lock.json"
log = logging.getLogger("winnow")


class OutputLockedError(RuntimeError):
    """Another run holds the output's lock."""


HEARTBEAT_S = 60.0


def _owner(run_id: str) -> dict:
    now = time.time()
    return {"user": getpass.getuser(), "host": socket.gethostname(), "pid": os.getpid(), "run_id": run_id,
            "since": now, "heartbeat": now}


def _holder_is_dead(lock: dict) -> bool:
    """True only when the holder ran on this host and its process no longer exists."""
    if lock.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(lock["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError, TypeError):
        return False
    return False


def _describe(lock: dict, uri: str, what: str = "output") -> str:
    now = time.time()
    age = now - float(lock.get("since", now))
    quiet = now - float(lock.get("heartbeat", lock.get("since", now)))
    stale = (f"; no heartbeat for {_age(quiet)}, so it looks stale" if quiet > 5 * HEARTBEAT_S else
             f"; last heartbeat {_age(quiet)} ago")
    return (f"{what} {uri} is locked by run {lock.get('run_id')} of {lock.get('user')}@{lock.get('host')} "
            f"pid {lock.get('pid')}, taken {_age(age)} ago{stale}. Wait for it to finish, or if that run is dead, "
            "run again with --break-lock")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _s3_client(s3: S3Config):
    import boto3

    kwargs = {"endpoint_url": s3.endpoint_url, "region_name": s3.region}
    if s3.access_key_id and s3.secret_access_key:
        kwargs |= {"aws_access_key_id": s3.access_key_id.get_secret_value(),
                   "aws_secret_access_key": s3.secret_access_key.get_secret_value(),
                   "aws_session_token": s3.session_token.get_secret_value() if s3.session_token else None}
    from botocore.config import Config

    retries = Config(retries={"max_attempts": s3.max_attempts, "mode": "standard"})
    return boto3.client("s3", config=retries, **{k: v for k, v in kwargs.items() if v is not None})


def create_exclusive(loc: Location, data: bytes, s3: S3Config) -> bool:
    """Write `data` at `loc` only if nothing is there; False if something was."""
    if loc.is_local:
        os.makedirs(os.path.dirname(loc.path), exist_ok=True)
        try:
            fd = os.open(loc.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    from botocore.exceptions import ClientError

    bucket, key = loc.path.split("/", 1)
    try:
        _s3_client(s3).put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        raise
    return True


def _read(loc: Location) -> dict:
    try:
        return json.loads(loc.read_bytes())
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def output_lock(output: Location, run_id: str, s3: S3Config | None = None,
                break_lock: bool = False, what: str = "output") -> Iterator[None]:
    """Hold the lock of an output (or of a run index, `what`) for the duration of a run (see the module
    docstring)."""
    s3 = s3 or S3Config()
    loc = output.join(LOCK)
    owner = _owner(run_id)
    if loc.exists() and (break_lock or _holder_is_dead(_read(loc))):
        held = _read(loc)
        log.warning("removing the lock of run %s (%s)", held.get("run_id"),
                    "--break-lock" if break_lock else f"its process {held.get('pid')} on this host is gone")
        loc.delete()
    if not create_exclusive(loc, json.dumps(owner).encode(), s3):
        raise OutputLockedError(_describe(_read(loc), output.uri, what))
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            owner["heartbeat"] = time.time()
            try:
                loc.write_bytes_atomic(json.dumps(owner).encode())
            except OSError as err:  # a missed beat is not fatal; the next one may get through
                log.warning("lock heartbeat failed: %s", err)

    thread = threading.Thread(target=beat, name="winnow-lock-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        loc.delete()
