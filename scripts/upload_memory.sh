#!/usr/bin/env bash
# Peak memory of one big admin key upload: starts faka on a fresh data dir,
# uploads one body of SIZE_MB (default 64) MiB of keys (text, one per line,
# or JSON with FORMAT=json), and prints faka's VmHWM (peak RSS) before and
# after the upload, from /proc/<pid>/status.
#
#   scripts/upload_memory.sh [path/to/faka]   # default: target/release/faka,
#                                             # else target/debug/faka
#   SIZE_MB=16 FORMAT=json scripts/upload_memory.sh
#
# See docs/BENCHMARKS.md, "Memory of one big key upload".
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-}
if [[ -z "$bin" ]]; then
    bin=target/release/faka
    [[ -x "$bin" ]] || bin=target/debug/faka
fi
size_mb=${SIZE_MB:-64}
format=${FORMAT:-text}
token=upload-memory-token
work=$(mktemp -d)
pid=
cleanup() {
    [[ -n "$pid" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/config.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "$work/data"
key_file = "$work/faka.key"
[admin]
token = "$token"
[limits]
import_body_mb = 256
TOML

# Keys of 21 bytes ("KEY-00000001-ABCDEFGH"), as many as fill the body.
n=$(( size_mb * 1024 * 1024 / 22 ))
if [[ "$format" == json ]]; then
    n=$(( size_mb * 1024 * 1024 / 24 ))
    awk -v n="$n" 'BEGIN { printf "{\"keys\":["; for (i = 1; i <= n; i++) printf "%s\"KEY-%08d-ABCDEFGH\"", (i > 1 ? "," : ""), i; printf "]}" }' >"$work/body"
    ctype=application/json
else
    awk -v n="$n" 'BEGIN { for (i = 1; i <= n; i++) printf "KEY-%08d-ABCDEFGH\n", i }' >"$work/body"
    ctype=text/plain
fi
body_bytes=$(stat -c %s "$work/body")

"$bin" --config "$work/config.toml" serve >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
    [[ -s "$work/data/faka.addr" ]] && break
    sleep 0.1
done
base=$(cat "$work/data/faka.addr")
hwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status"; }

curl -fsS -o /dev/null -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d '{"id":"mem","name":"Memory","price":100}' "$base/api/v1/admin/products"
before=$(hwm)
start=$(date +%s.%N)
answer=$(curl -sS -H "Authorization: Bearer $token" -H "Content-Type: $ctype" \
    --data-binary "@$work/body" "$base/api/v1/admin/products/mem/keys")
end=$(date +%s.%N)
after=$(hwm)
echo "binary:       $bin"
echo "body:         $format, $body_bytes bytes, $n keys"
echo "answer:       $answer"
printf 'upload time:  %.1f s\n' "$(echo "$end - $start" | bc)"
echo "VmHWM before: $((before / 1024)) MiB"
echo "VmHWM after:  $((after / 1024)) MiB  ($(echo "scale=2; $after * 1024 / $body_bytes" | bc)x the body)"
