#!/usr/bin/env bash
# compare.sh runs the same sse-bench loads against sse-service and against
# the floor (../shared/bench/floor: one write per delivery from the
# publishing goroutine, nothing else) and prints each figure with its ratio
# to the floor's: the ratio of the medians, then each round's ratio (its
# service run against the floor run right after it, so a slow minute of a
# shared machine shows as one odd round). Each figure gets a fresh server
# pinned to CPU 0, the load generator runs on CPU 1, and the two servers
# alternate, so slow drifts hit both. Loopback only; every run stops by
# itself.
#
# Usage (from anywhere in the repository):
#
#	cmd/sse-bench/compare.sh [scenario ...]
#
# Scenarios (default: idle d50 d100):
#
#	idle   10,000 streams, no events: KiB of server RSS per stream
#	d50    1,000 streams x 50 events/s: CPU µs per delivery, p99
#	d100   1,000 streams x 100 events/s: CPU µs per delivery, p99
#	w10k   10,000 streams x 10 events/s
#	h100   100 streams x 1,000 events/s
#	top    1,000 streams x ${TOP_RATE:-150} events/s: the highest sustained rate
#
# Environment: DURATION (default 20s) is each run's measurement window,
# ROUNDS (default 3) how many times each pair runs (the median is shown),
# FLOOR_DIR where the floor's source is, OUT where the JSON reports go
# (default a new temporary directory), SSE_BIN/FLOOR_BIN/BENCH_BIN to use
# prebuilt binaries instead of building them.
# Needs: go, taskset, jq, curl.
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
DURATION=${DURATION:-20s}
ROUNDS=${ROUNDS:-3}
FLOOR_DIR=${FLOOR_DIR:-$root/../shared/bench/floor}
OUT=${OUT:-$(mktemp -d /tmp/sse-compare.XXXXXX)}
TOP_RATE=${TOP_RATE:-150}
TOKEN=bench-token-0123456789
ADDR=127.0.0.1:18080
ADMIN=127.0.0.1:19090

for tool in go taskset jq curl; do
	command -v "$tool" >/dev/null || { echo "compare.sh: needs $tool" >&2; exit 2; }
done
mkdir -p "$OUT/bin"
SSE_BIN=${SSE_BIN:-$OUT/bin/sse-service}
BENCH_BIN=${BENCH_BIN:-$OUT/bin/sse-bench}
FLOOR_BIN=${FLOOR_BIN:-$OUT/bin/floor}
[[ -x $SSE_BIN ]] || (cd "$root" && go build -o "$SSE_BIN" ./cmd/sse-service)
[[ -x $BENCH_BIN ]] || (cd "$root" && go build -o "$BENCH_BIN" ./cmd/sse-bench)
[[ -x $FLOOR_BIN ]] || (cd "$FLOOR_DIR" && go build -o "$FLOOR_BIN" .)

# scenario NAME prints: streams rate extra-sse-bench-flags
scenario() {
	case $1 in
	idle) echo "10000 0 -duration 2s -dials 500" ;;
	d50) echo "1000 50 -duration $DURATION" ;;
	d100) echo "1000 100 -duration $DURATION" ;;
	w10k) echo "10000 10 -duration $DURATION -dials 500" ;;
	h100) echo "100 1000 -duration $DURATION -publishers 8" ;;
	top) echo "1000 $TOP_RATE -duration $DURATION -publishers 8" ;;
	*) echo "compare.sh: unknown scenario $1" >&2; return 2 ;;
	esac
}

pid=
stop_server() {
	if [[ -n $pid ]]; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		pid=
	fi
}
trap stop_server EXIT

# start_server KIND starts a fresh server on CPU 0 and waits until it serves.
start_server() {
	case $1 in
	service)
		SSE_ADDR=$ADDR SSE_ADMIN_ADDR=$ADMIN SSE_PUBLISH_TOKENS=$TOKEN SSE_CLOCK_INTERVAL=0 \
			SSE_MAX_CONNECTIONS_PER_IP=0 SSE_LOG_LEVEL=warn \
			taskset -c 0 "$SSE_BIN" >"$OUT/service.log" 2>&1 &
		pid=$!
		ready() { curl -fs "http://$ADMIN/readyz" >/dev/null; }
		;;
	floor)
		taskset -c 0 "$FLOOR_BIN" -addr "$ADDR" >"$OUT/floor.log" 2>&1 &
		pid=$!
		ready() { curl -s -o /dev/null "http://$ADDR/"; }
		;;
	esac
	for _ in $(seq 100); do
		ready && return 0
		sleep 0.1
	done
	echo "compare.sh: $1 did not start (see $OUT/$1.log)" >&2
	return 1
}

# quiet waits (up to a minute) for a second in which the machine is at
# least 90% idle: on a shared machine, another job's load would be counted
# against whichever server happens to run beside it.
quiet() {
	local a b c d e f g t1 i1 t2 i2
	for _ in $(seq 60); do
		read -r _ a b c d e f g _ </proc/stat
		t1=$((a + b + c + d + e + f + g)) i1=$d
		sleep 1
		read -r _ a b c d e f g _ </proc/stat
		t2=$((a + b + c + d + e + f + g)) i2=$d
		(((i2 - i1) * 100 >= 90 * (t2 - t1))) && return 0
	done
	echo "compare.sh: the machine is busy; measuring anyway" >&2
}

# run KIND SCENARIO ROUND runs sse-bench once against a fresh KIND server.
run() {
	local streams rate extra
	read -r streams rate extra <<<"$(scenario "$2")"
	quiet
	start_server "$1"
	# shellcheck disable=SC2086 # extra holds several flags
	taskset -c 1 "$BENCH_BIN" -url "http://$ADDR" -token "$TOKEN" -streams "$streams" -rate "$rate" \
		-pid "$pid" -json $extra >"$OUT/$2-$1-$3.json" 2>"$OUT/$2-$1-$3.txt" || true
	stop_server
}

# median FILES... prints the median of jq filter $F over the reports.
median() {
	jq -s "map($F) | sort | .[length/2|floor]" "$@"
}

scenarios=("$@")
[[ ${#scenarios[@]} -gt 0 ]] || scenarios=(idle d50 d100)
for s in "${scenarios[@]}"; do scenario "$s" >/dev/null; done

for s in "${scenarios[@]}"; do
	for r in $(seq "$ROUNDS"); do
		run service "$s" "$r"
		run floor "$s" "$r"
	done
done

printf '%-6s %-22s %12s %12s %7s  %s\n' scenario figure service floor ratio "per round (the pair run one after the other)"
for s in "${scenarios[@]}"; do
	svc=("$OUT/$s-service-"*.json) flr=("$OUT/$s-floor-"*.json)
	if [[ $s == idle ]]; then
		figures=("KiB RSS/stream:.server.rss_per_stream_kib")
	else
		figures=("CPU µs/delivery:.server.cpu_us_per_delivery" "p99 ms:.latency.p99_ms" "deliveries/s:.deliveries_per_second")
	fi
	for f in "${figures[@]}"; do
		label=${f%%:*} F=${f#*:}
		a=$(F=$F median "${svc[@]}") b=$(F=$F median "${flr[@]}")
		ratio=$(jq -n "if $b == 0 then \"-\" else ($a / $b * 100 | round / 100) end")
		rounds=()
		for r in $(seq "$ROUNDS"); do
			rounds+=("$(jq -rs "(.[0]|$F) as \$a | (.[1]|$F) as \$b | if \$b == 0 then \"-\" else (\$a / \$b * 100 | round / 100) end" \
				"$OUT/$s-service-$r.json" "$OUT/$s-floor-$r.json" 2>/dev/null || echo "-")")
		done
		printf '%-6s %-22s %12s %12s %7s  %s\n' "$s" "$label" "$a" "$b" "$ratio" "${rounds[*]}"
	done
	bad=$(jq -s '[.[] | select(.ok | not)] | length' "${svc[@]}")
	[[ $bad == 0 ]] || echo "$s: $bad service run(s) failed their checks (gaps, duplicates, losses): see $OUT/$s-service-*.txt"
done
echo "reports: $OUT"
