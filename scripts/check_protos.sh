#!/usr/bin/env bash
# Fails when the committed generated code differs from what protos/ generates now.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
scripts/gen_protos.sh "$tmp"
if ! diff -r -q -x '__init__.py' -x '__pycache__' "$tmp/musicrec/v1" musicrec/v1; then
  echo "generated protobuf code is stale: run 'make proto' and commit the result" >&2
  exit 1
fi
echo "generated protobuf code is up to date"
