"""S3 behaviour under a throttling store, side by side: small writes with the AWS SDK's "standard"
retry strategy (what pyarrow users usually pick) vs the "default" one winnow uses, and GET requests
for streaming a JSONL file in pyarrow's 64 KiB reads vs winnow's reader.

    .venv/bin/python benchmarks/s3_faults.py [--writes 300] [--throttle 0.3]

Runs moto's S3 server on 127.0.0.1 behind the test suite's fault proxy (tests/s3_faults.py).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import boto3  # noqa: E402
import pyarrow.fs as pafs  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402
from s3_faults import FaultyS3Proxy  # noqa: E402

from winnow.schemas.config import S3Config  # noqa: E402
from winnow.storage.fs import resolve  # noqa: E402
from winnow.storage.shards import iter_jsonl_lines  # noqa: E402

BUCKET = "bench"


def writes(proxy_url: str, strategy: str, n: int) -> tuple[int, float]:
    """(failed writes, seconds) for `n` small whole-object writes with one retry strategy."""
    retry = {"standard": pafs.AwsStandardS3RetryStrategy, "default": pafs.AwsDefaultS3RetryStrategy}[strategy]
    host = proxy_url.removeprefix("http://")
    fs = pafs.S3FileSystem(endpoint_override=host, scheme="http", region="us-east-1",
                           retry_strategy=retry(max_attempts=10))
    failed, start = 0, time.perf_counter()
    with quiet_stderr():  # Arrow's C++ log warns on every throttled CompleteMultipartUpload
        for i in range(n):
            try:
                with fs.open_output_stream(f"{BUCKET}/{strategy}/{i}.json") as f:
                    f.write(b'{"i": %d}' % i)
            except OSError:
                failed += 1
    return failed, time.perf_counter() - start


@contextlib.contextmanager
def quiet_stderr():
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--throttle", type=float, default=0.3, help="share of requests answered 503 SlowDown")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=BUCKET)
    try:
        print(f"{args.writes} small writes, {args.throttle:.0%} of requests throttled (503 SlowDown), 10 attempts:")
        for strategy in ("standard", "default"):
            with FaultyS3Proxy(endpoint, throttle=args.throttle, drop=0.0, seed=1) as proxy:
                failed, seconds = writes(proxy.url, strategy, args.writes)
            print(f"  {strategy:>8} retry strategy: {failed} failed, {seconds:.1f} s")

        body = os.urandom(13 << 20)
        s3.put_object(Bucket=BUCKET, Key="a.jsonl", Body=body)
        with FaultyS3Proxy(endpoint, throttle=0.0, drop=0.0) as proxy:
            loc = resolve(f"s3://{BUCKET}/a.jsonl", S3Config(endpoint_url=proxy.url))
            with loc.fs.open_input_stream(loc.path, compression=None) as f:
                while f.read(1 << 16):
                    pass
            before = sum(method == "GET" for method, _, _ in proxy.log)
            proxy.log.clear()
            for _ in iter_jsonl_lines(loc, batch_size=10_000):
                pass
            after = sum(method == "GET" for method, _, _ in proxy.log)
        print(f"streaming a 13 MiB JSONL file: pyarrow stream, 64 KiB reads {before} GETs; winnow {after} GETs")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
