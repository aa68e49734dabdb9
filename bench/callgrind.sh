#!/usr/bin/env bash
# Instructions per operation of each contender of the hit-path benchmark (issue 14), by callgrind:
# (Ir(2N) - Ir(N)) / N, so setup, warm-up and the runtime's start cancel out. Counts do not depend on the
# machine's load. Needs valgrind and redis-server; starts its own redis-server on a free port.
#
#   bash bench/callgrind.sh            # every contender
#   N=2000 bash bench/callgrind.sh     # more operations per run (steadier, slower)
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-2000}
cargo build --profile bench -p kvtower-hitpath --example callgrind >&2
BIN=target/release/examples/callgrind
OUT=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --loglevel warning >/dev/null &
REDIS_PID=$!
trap 'kill $REDIS_PID 2>/dev/null; rm -rf "$OUT"' EXIT
URL="redis://127.0.0.1:$PORT"
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
"$BIN" prepare "$URL"

# Total instructions of one run.
ir() {
  local file="$OUT/cg.$1.$2.$3.$4"
  valgrind --tool=callgrind --callgrind-out-file="$file" "$BIN" run "$URL" "$1" "$2" "$3" >/dev/null 2>&1
  awk '/^summary:/ {print $2}' "$file"
}

# Instructions per operation of contender $1 doing op $2.
per_op() {
  local n=$N
  # Misses read each cold key once: at most 6,000 keys in all.
  [ "$2" = miss ] && n=$(( N < 2000 ? N : 2000 ))
  local a b
  a=$(ir "$1" "$2" "$n" 1)
  b=$(ir "$1" "$2" $((2 * n)) 2)
  echo $(( (b - a) / n ))
}

row() { # op floor-contender contender...
  local op=$1 floor=$2; shift 2
  local base
  base=$(per_op "$floor" "$op")
  printf '%-6s %-22s %8d  1.00x\n' "$op" "$floor" "$base"
  for c in "$@"; do
    local v
    v=$(per_op "$c" "$op")
    printf '%-6s %-22s %8d  %.2fx\n' "$op" "$c" "$v" "$(echo "$v / $base" | bc -l)"
  done
}

echo "op     contender              Ir/op  vs floor"
row hit floor stack stack_plain_fills stack_per_entry_expiry stack_get memory memory_front moka_arc moka_value amalgam multitier \
  aside moka_get_with_arc moka_get_with_value
row hit_full floor stack stack_plain_fills
row miss floor stack stack_plain_fills stack_per_entry_expiry amalgam multitier
row redis raw kvtower kvtower_shared kvtower_ttl
"$BIN" rounds "$URL"
