#!/usr/bin/env bash
# fleet-measure.sh — what an idle fleet costs, measured (not a timed test).
#
# Runs N real lmntd processes (separate state directories, production
# settings: check_interval 60 s, push on, no Klipper connected) against a
# real lmnt-marketsim, all started within the same second after pairing, and
# over a window of W seconds prints:
#   - idle wakeups/s of each daemon: voluntary + involuntary context switches
#     summed over all its threads (/proc/PID/task/*/status), next to a
#     reference Go program that only runs one 60 s ticker, measured the same
#     way in the same run (the ratio is the figure to compare across machines);
#   - requests per printer per 5 minutes besides the push stream, and push
#     stream connections, from the simulator's request log (GET /admin/requests).
#
# Usage: scripts/fleet-measure.sh [-n PRINTERS] [-w WINDOW_SECONDS]
# Needs: go, curl, jq. Listens on loopback only; leaves nothing running.
set -euo pipefail

n=5
window=600
while getopts "n:w:" opt; do
	case $opt in
	n) n=$OPTARG ;;
	w) window=$OPTARG ;;
	*) echo "usage: $0 [-n PRINTERS] [-w WINDOW_SECONDS]" >&2; exit 2 ;;
	esac
done
export PATH=/usr/local/go/bin:$PATH
for tool in go curl jq; do
	command -v "$tool" >/dev/null || { echo "$0: $tool is required" >&2; exit 1; }
done

repo=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d /tmp/lmnt-fleet-measure.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT

echo "building lmntd, lmnt-marketsim and the reference program…" >&2
(cd "$repo" && CGO_ENABLED=0 go build -o "$tmp/bin/" ./cmd/lmntd ./cmd/lmnt-marketsim)
mkdir -p "$tmp/ref"
cat >"$tmp/ref/main.go" <<'EOF'
// The reference: a Go program whose only work is one 60 s ticker.
package main

import "time"

func main() {
	for range time.NewTicker(time.Minute).C {
	}
}
EOF
(cd "$tmp/ref" && CGO_ENABLED=0 go build -o "$tmp/bin/ref" main.go)

# Ports: a random block on loopback, so runs next to other work do not clash.
base=$((20000 + RANDOM % 20000))
admin="http://127.0.0.1:$((base + 3))"
TZ=UTC "$tmp/bin/lmnt-marketsim" serve --auto-approve --dir "$tmp/sim" \
	--api "127.0.0.1:$base" --storage "127.0.0.1:$((base + 1))" --push "127.0.0.1:$((base + 2))" \
	--admin "127.0.0.1:$((base + 3))" >"$tmp/sim.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "$admin/admin/state" >/dev/null && break; sleep 0.1; done
curl -sf "$admin/admin/state" >/dev/null || { cat "$tmp/sim.log" >&2; exit 1; }

daemon_dir() { echo "$tmp/printer$1"; }
for i in $(seq "$n"); do
	d=$(daemon_dir "$i")
	mkdir -p "$d/state" "$d/run"
	: >"$d/printer.cfg"
	cat >"$d/lmntd.toml" <<EOF
api_profile = "current"

[marketplace]
url = "https://127.0.0.1:$base"
tls_ca_file = "$tmp/sim/ca.pem"
check_interval = "60s"

[push]
enabled = true
base_url = "https://127.0.0.1:$((base + 2))"

[paths]
state_directory = "$d/state"
runtime_directory = "$d/run"

[seal]
backend = "software"

[klipper]
user = "$(id -un)"
config_file = "$d/printer.cfg"
bridge_socket = "$d/run/klipper.sock"

[api]
socket = "$d/run/api.sock"

[migration]
import_moonraker = false
EOF
done

start_daemon() {
	local d
	d=$(daemon_dir "$1")
	"$tmp/bin/lmntd" --config "$d/lmntd.toml" >>"$d/lmntd.log" 2>&1 &
	pids+=($!)
	daemon_pid[$1]=$!
}
api() { curl -sf --unix-socket "$(daemon_dir "$1")/run/api.sock" "http://lmntd$2" "${@:3}"; }
wait_api() {
	for _ in $(seq 200); do api "$1" /lmnt/v1/status >/dev/null 2>&1 && return 0; sleep 0.05; done
	echo "printer $1 did not start:" >&2; cat "$(daemon_dir "$1")/lmntd.log" >&2; exit 1
}

declare -A daemon_pid
echo "pairing $n printers…" >&2
for i in $(seq "$n"); do
	start_daemon "$i"
	wait_api "$i"
	api "$i" /machine/lmnt_marketplace/pair/start -XPOST -H 'Content-Type: application/json' \
		-d "{\"printer_name\":\"fleet $i\"}" >/dev/null
done
for i in $(seq "$n"); do
	for _ in $(seq 200); do
		[ "$(api "$i" /machine/lmnt_marketplace/pair/status | jq -r .status)" = paired ] && break
		sleep 0.05
	done
done

# The fleet restarts together (an upgrade wave, a power cut).
echo "restarting the fleet together…" >&2
for i in $(seq "$n"); do kill "${daemon_pid[$i]}"; done
for i in $(seq "$n"); do wait "${daemon_pid[$i]}" 2>/dev/null || true; done
start=$(date +%s.%N)
for i in $(seq "$n"); do start_daemon "$i"; done
"$tmp/bin/ref" &
pids+=($!)
ref_pid=$!
for i in $(seq "$n"); do wait_api "$i"; done

switches() { # context switches of every thread of $1
	cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s + 0}'
}
sleep 5 # start-up work (TLS handshakes, first stream) is not idle time
declare -A before
for i in $(seq "$n"); do before[$i]=$(switches "${daemon_pid[$i]}"); done
ref_before=$(switches "$ref_pid")
echo "measuring for $window s…" >&2
sleep "$window"
end=$(date +%s.%N)
ref_rate=$(echo "$(switches "$ref_pid") $ref_before $window" | awk '{printf "%.3f", ($1 - $2) / $3}')

# The log as "printer call epoch-seconds", from the restart to the end.
curl -sf "$admin/admin/requests" | jq -r --argjson s "$start" --argjson e "$end" '
	.[] | select(.printer != null)
	| (.at | capture("^(?<s>[^.Z]+)(?<f>\\.[0-9]+)?Z$")) as $c
	| ((($c.s + "Z") | fromdateiso8601) + (("0" + ($c.f // "")) | tonumber)) as $t
	| select($t >= $s and $t <= $e) | "\(.printer) \(.call) \($t)"' >"$tmp/reqs.txt"

printf '%s, %s, %d printers, window %d s\n' "$(date -u +%Y-%m-%d)" "$(uname -m), $(nproc) CPUs, Linux $(uname -r)" "$n" "$window"
printf 'reference Go program (one 60 s ticker): %s wakeups/s\n' "$ref_rate"
printf '%-8s %-11s %-8s %-17s %-14s %s\n' printer wakeups/s "vs ref" "req/5 min (!push)" "push connects" "first poll after start"
span=$(echo "$end $start" | awk '{print $1 - $2}')
for i in $(seq "$n"); do
	pid=${daemon_pid[$i]}
	rate=$(echo "$(switches "$pid") ${before[$i]} $window" | awk '{printf "%.3f", ($1 - $2) / $3}')
	ratio=$(echo "$rate $ref_rate" | awk '{ if ($2 > 0) printf "%.1fx", $1 / $2; else print "-" }')
	printer=$(api "$i" /lmnt/v1/status | jq -r .auth.printer_id)
	api_reqs=$(awk -v p="$printer" '$1==p && $2!="push"' "$tmp/reqs.txt" | wc -l)
	push=$(awk -v p="$printer" '$1==p && $2=="push"' "$tmp/reqs.txt" | wc -l)
	per5=$(echo "$api_reqs $span" | awk '{printf "%.2f", $1 * 300 / $2}')
	first=$(awk -v p="$printer" -v s="$start" '$1==p && $2=="poll" {printf "%.1f s", $3 - s; exit}' "$tmp/reqs.txt")
	printf '%-8s %-11s %-8s %-17s %-14s %s\n' "$i" "$rate" "$ratio" "$per5" "$push" "${first:--}"
done
