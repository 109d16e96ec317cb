#!/usr/bin/env bash
# From zero to a delivered order, with curl: the README's walk-through as a
# script (a test runs it). Starts its own faka on a free port in a temp dir.
#
#   scripts/demo.sh                 # uses target/release/faka (builds it if missing);
#                                   # $CARGO_TARGET_DIR/release/faka when that is set
#   DEMO_BIN=path/to/faka scripts/demo.sh
set -euo pipefail

# Cargo reads a relative CARGO_TARGET_DIR from the caller's directory.
case ${CARGO_TARGET_DIR:-} in
  '' | /*) ;;
  *) export CARGO_TARGET_DIR="$PWD/$CARGO_TARGET_DIR" ;;
esac
cd "$(dirname "$0")/.."
BIN=${DEMO_BIN:-${CARGO_TARGET_DIR:-target}/release/faka}
[ -x "$BIN" ] || cargo build --release --quiet
echo "faka: $BIN"
WORK=$(mktemp -d)
ADMIN=demo-admin-token
SECRET=demo-hmac-secret

cat > "$WORK/config.toml" <<EOF
[server]
listen = "127.0.0.1:0"
[admin]
token = "$ADMIN"
[payments.hmac]
secret = "$SECRET"
[log]
format = "json"
EOF

"$BIN" --config "$WORK/config.toml" serve > "$WORK/faka.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT

# The log says which port it got.
for _ in $(seq 1 300); do
  PORT=$(sed -n 's/.*"port":\([0-9]*\).*"faka is serving".*/\1/p; s/.*"faka is serving".*"port":\([0-9]*\).*/\1/p' "$WORK/faka.log" | head -n1)
  [ -n "$PORT" ] && break
  sleep 0.1
done
[ -n "${PORT:-}" ] || { echo "faka did not start:"; cat "$WORK/faka.log"; exit 1; }
URL=http://127.0.0.1:$PORT
field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"; }
step() { printf '\n== %s\n' "$*"; }

step "1. The merchant creates a product (price in fen: 69.00 CNY)"
curl -sf -X POST "$URL/api/v1/admin/products" -H "Authorization: Bearer $ADMIN" \
  -H 'Content-Type: application/json' \
  -d '{"id": "steam-10", "name": "Steam 10 USD", "price": 6900, "max_quantity": 5}'

step "2. ... and imports card keys, one per line"
printf 'STEAM-AAAA-0001\nSTEAM-BBBB-0002\nSTEAM-CCCC-0003\n' |
  curl -sf -X POST "$URL/api/v1/admin/products/steam-10/keys" -H "Authorization: Bearer $ADMIN" \
    -H 'Content-Type: text/plain' --data-binary @-

step "3. A buyer sees the product with its stock"
curl -sf "$URL/api/v1/products/steam-10"

step "4. The buyer orders one key, paying off-band (manual gateway)"
ORDER=$(curl -sf -X POST "$URL/api/v1/orders" -H 'Content-Type: application/json' \
  -d '{"product_id": "steam-10", "quantity": 1, "email": "buyer@example.com", "gateway": "manual"}')
echo "$ORDER"
NO=$(echo "$ORDER" | field order_no)
TOKEN=$(echo "$ORDER" | field token)

step "5. The merchant confirms the money arrived (补单)"
curl -sf -X POST "$URL/api/v1/admin/orders/$NO/pay" -H "Authorization: Bearer $ADMIN" \
  -H 'Content-Type: application/json' -d '{"trade_no": "BANK-20261125-1", "note": "bank transfer"}' >/dev/null
echo "paid"

step "6. The buyer opens the order with its token and gets the key"
curl -sf "$URL/api/v1/orders/$NO?token=$TOKEN"

step "7. A second buyer pays through the hmac gateway"
ORDER=$(curl -sf -X POST "$URL/api/v1/orders" -H 'Content-Type: application/json' \
  -d '{"product_id": "steam-10", "quantity": 2, "email": "second@example.com", "gateway": "hmac"}')
NO=$(echo "$ORDER" | field order_no)
TOKEN=$(echo "$ORDER" | field token)
BODY="{\"order_no\":\"$NO\",\"trade_no\":\"GW-$NO\",\"amount\":13800,\"status\":\"paid\"}"
TS=$(date +%s)
SIG=$(printf '%s' "$TS.$BODY" | openssl dgst -sha256 -hmac "$SECRET" | sed 's/^.*= //')
curl -sf -X POST "$URL/api/v1/payments/hmac/notify" -H 'Content-Type: application/json' \
  -H "X-Faka-Timestamp: $TS" -H "X-Faka-Signature: $SIG" -d "$BODY"

step "8. ... and the keys are there at once"
curl -sf "$URL/api/v1/orders/$NO?token=$TOKEN"

step "9. The merchant's view: stock counts"
curl -sf "$URL/api/v1/admin/products" -H "Authorization: Bearer $ADMIN"
printf '\n\ndemo ok\n'
