#!/usr/bin/env bash
# A local S3-compatible server for development: moto's standalone server on loopback.
#   infra/local_s3.sh [PORT]     then: export AWS_ENDPOINT_URL=http://127.0.0.1:PORT
# Credentials can be anything (moto accepts any); create buckets with boto3 or the AWS CLI.
set -euo pipefail
PORT="${1:-9000}"
exec "$(dirname "$0")/../.venv/bin/moto_server" -H 127.0.0.1 -p "$PORT"
