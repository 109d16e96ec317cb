#!/usr/bin/env bash
# Mutation testing of faka's critical code with cargo-mutants
# (`cargo install cargo-mutants --locked`): each mutant is a small change to
# the code (`<` to `<=`, a function returning a default, a match arm gone),
# built and tested; a mutant the tests still pass is "missed", a bug the
# tests would let through. Equivalent mutants (no behaviour changes) are
# excluded, each with its reason, in .cargo/mutants.toml, so a clean run
# means something. Not in CI (on two shared cores it takes most of an hour);
# run it before resolving an issue that touches these files and put the
# scores in the note. docs/TESTING.md has the last scores.
#
#   scripts/mutants.sh                          # every critical file
#   scripts/mutants.sh src/crypto.rs            # some of them
#   API=1 scripts/mutants.sh src/payments/epay.rs
#
# Library tests first. With API=1, the mutants they miss are tried again
# with the quick API groups (QUICK below), which start the whole shop.
# Runs in a snapshot of this tree taken with `cp -a`, one mutant at a time
# in place: `cp -a` keeps target/'s timestamps, so only faka itself is
# rebuilt per mutant (cargo-mutants' own copies rebuild every dependency).
# Output: target/mutants/<file>/mutants.out (missed.txt, caught.txt, logs).
set -euo pipefail
cd "$(dirname "$0")/.."

# The pure code money, keys and secrets depend on. Add the files that verify
# a new gateway, coupons or sessions as they land.
CRITICAL=(
    src/domain/order.rs
    src/domain/ids.rs
    src/crypto.rs
    src/payments/hmac.rs
    src/payments/epay.rs
    src/payments/alipay.rs
    src/payments/wechat.rs
    src/payments/stripe.rs
    src/domain/pricing.rs
)
QUICK=(epay:: alipay:: payments:: keys:: orders:: errors:: products:: wechat:: stripe::)
files=("$@")
[ ${#files[@]} -gt 0 ] || files=("${CRITICAL[@]}")

command -v cargo-mutants >/dev/null || {
    echo "cargo-mutants is missing: cargo install cargo-mutants --locked" >&2
    exit 1
}
here=$(pwd)
out="$here/target/mutants"
mkdir -p "$out"
snap=$(mktemp -d /tmp/faka-mutants.XXXXXX)
trap 'rm -rf "$snap"' EXIT
echo "snapshot of $here in $snap"
cp -a . "$snap/tree"
rm -rf "$snap/tree/target/mutants" "$snap/tree/mutants.out"
cd "$snap/tree"

count() { [ -s "$1" ] && grep -c . "$1" || echo 0; }
summary=()
for f in "${files[@]}"; do
    name=$(echo "$f" | tr / _)
    dir="$out/$name"
    rm -rf "$dir" "$dir.lib"
    echo "== $f: library tests"
    # Exit code 2 means "some mutants missed": reported below, not fatal.
    cargo mutants --in-place -f "$f" -C --lib -o "$dir" || [ $? -eq 2 ]
    missed=$(count "$dir/mutants.out/missed.txt")
    line="$f: $(count "$dir/mutants.out/caught.txt") caught, $missed missed"
    line+=", $(count "$dir/mutants.out/unviable.txt") unviable"
    line+=", $(count "$dir/mutants.out/timeout.txt") timeout (--lib)"
    if [ "${API:-0}" = 1 ] && [ "$missed" -gt 0 ]; then
        echo "== $f: the $missed missed, with the quick API groups"
        cp -a "$dir" "$dir.lib"
        cargo mutants --in-place --iterate -f "$f" -C --test=api -o "$dir" \
            -- "${QUICK[@]}" || [ $? -eq 2 ]
        line+="; $(count "$dir/mutants.out/missed.txt") still missed with API tests"
    fi
    summary+=("$line")
done
echo
printf '%s\n' "${summary[@]}"
for f in "${files[@]}"; do
    m="$out/$(echo "$f" | tr / _)/mutants.out/missed.txt"
    [ -s "$m" ] && { echo "missed in $f:"; cat "$m"; }
done
exit 0
