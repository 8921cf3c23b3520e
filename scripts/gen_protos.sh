#!/usr/bin/env bash
# Regenerates musicrec/v1/*_pb2*.py from protos/. The proto path equals the import path
# (protos/musicrec/v1/x.proto -> package musicrec.v1 -> Python module musicrec.v1.x_pb2),
# so generated imports work without rewriting. Usage: scripts/gen_protos.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-.}"
py="${PYTHON:-python}"
mkdir -p "$out/musicrec/v1"
rm -f "$out"/musicrec/v1/*_pb2.py "$out"/musicrec/v1/*_pb2.pyi "$out"/musicrec/v1/*_pb2_grpc.py
"$py" -m grpc_tools.protoc -Iprotos \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  protos/musicrec/v1/*.proto
