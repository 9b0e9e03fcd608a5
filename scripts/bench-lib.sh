# Helpers shared by the benchmark, demo and test-service scripts (sourced, not run).
say() { printf '\n==> %s\n' "$*"; }
FREE_PORT_PY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/free-port.py"
free_port() { python3 "$FREE_PORT_PY"; }
# Free MiB on the file system holding $1.
free_mib() { df -Pm "$1" | awk 'NR == 2 { print $4 }'; }
# Peak resident set (KiB) of process $1 so far.
proc_hwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

# Timed steps of a demo: `step NAME COMMAND...` runs and times it; `print_steps` lists the times.
declare -a STEPS TIMES
step() {
  local name=$1; shift
  echo "==> $name"
  local t0; t0=$(date +%s.%N)
  "$@"
  STEPS+=("$name"); TIMES+=("$(echo "$(date +%s.%N) - $t0" | bc -l)")
}
print_steps() {
  printf '%-36s %10s\n' "step" "seconds"
  for i in "${!STEPS[@]}"; do printf '%-36s %10.2f\n' "${STEPS[$i]}" "${TIMES[$i]}"; done
}
