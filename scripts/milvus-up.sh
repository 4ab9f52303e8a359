#!/usr/bin/env bash
# Start a local Milvus standalone server (PyPI `milvus` 2.3.5) on 127.0.0.1 in the background.
# Data under .trace/milvus/, PID in .trace/pids/milvus.pid, log in .trace/logs/milvus.log;
# `make milvus-down` stops it by PID. Authentication is on: root's password is replaced by a
# generated one, kept as the token `root:<password>` in .trace/milvus.token (mode 0600).
# This Milvus build listens on every interface whatever its config says: where the system
# allows a private network namespace (root, or unprivileged user namespaces) the server runs in
# one whose only interface is loopback and is reached through 127.0.0.1:$MILVUS_PORT only;
# otherwise it listens on every interface, protected by the password alone.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"
MILVUS_PORT="${MILVUS_PORT:-19530}"
TOKEN_FILE="$STATE/milvus.token"
start_bg milvus python -m trace_core.indexing.milvus_server serve --base "$STATE/milvus" \
  --port "$MILVUS_PORT" --secret "$TOKEN_FILE" --bin-cache "$STATE/milvus-bin"
if ! python -m trace_core.indexing.milvus_server wait --base "$STATE/milvus" --pid "$(cat "$PIDS/milvus.pid")" \
  --timeout 240; then
  tail -20 "$LOGS/milvus.log" >&2
  exit 1
fi
umask 077
cat >"$STATE/milvus.env" <<ENV
# source this file to let the index/evaluate stages reach the local Milvus (written by scripts/milvus-up.sh);
# the token stays in $TOKEN_FILE (0600), never in params.yaml
export TRACE_MILVUS_TOKEN="\$(cat '$TOKEN_FILE')"
export PATH="$VENV/bin:\$PATH"
ENV
echo "ready: $(cat "$STATE/milvus/ready.json")"
echo "Milvus on http://127.0.0.1:$MILVUS_PORT (authentication on; token in $TOKEN_FILE)"
echo "use it:  source .trace/milvus.env && dvc exp run -S index.uri=http://127.0.0.1:$MILVUS_PORT"
