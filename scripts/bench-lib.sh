# Helpers shared by scripts/bench.sh and scripts/bench-postgres.sh (sourced, not run).
say() { printf '\n==> %s\n' "$*"; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
# Free MiB on the file system holding $1.
free_mib() { df -Pm "$1" | awk 'NR == 2 { print $4 }'; }
# Peak resident set (KiB) of process $1 so far.
proc_hwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
