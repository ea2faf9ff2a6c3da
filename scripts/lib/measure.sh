# Timing and peak memory for the benchmarks. Source it after setting $work (a scratch folder).
now() { date +%s.%N; }
# Runs "$@" and prints "seconds peak_rss_kib": the peak RSS (VmHWM) of that process itself, not of
# its children. The command's own stdout goes to $work/last-stdout: ours carries the measurement.
measure() {
  local start end pid peak=0 hwm
  start=$(now)
  "$@" > "$work/last-stdout" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$hwm" ] && peak=$hwm
    sleep 0.05
  done
  wait "$pid"
  end=$(now)
  echo "$(echo "$end - $start" | bc -l) $peak"
}
