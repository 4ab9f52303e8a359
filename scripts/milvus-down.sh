#!/usr/bin/env bash
# Stop the Milvus server scripts/milvus-up.sh started, by recorded PID (graceful: ~10-30 s).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
stop_bg milvus TERM
