#!/usr/bin/env bash
# Stop what scripts/prefect-up.sh started, by recorded PID (serving process first).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
stop_bg prefect-serve INT
stop_bg prefect-worker INT
stop_bg prefect-server TERM
