#!/usr/bin/env bash
# Stop what scripts/prefect-up.sh started (the serving process, then the server), by recorded PID.
# Processes these scripts never started (no pid file) are not mentioned.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
stopped=0
stop_bg prefect-serve INT && stopped=1
stop_bg prefect-server TERM && stopped=1
(( stopped )) || echo "Prefect: nothing to stop (no pid files in $PIDS; start with make prefect-up)"
