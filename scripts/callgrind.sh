#!/usr/bin/env bash
# Instructions per request for each client, counted by callgrind: the difference between a run
# of 2N and a run of N requests (at concurrency 1, or C), divided by N, so that start-up cancels out.
# Deterministic: the same binary gives the same counts on a busy or an idle machine. Only what
# runs on the tokio runtime is counted: start-up before it (the clients' construction, where the
# rate limiter's clock calibrates the CPU's counter for as long as it takes) varies from run to run.
#
#   scripts/callgrind.sh            # N = 1000
#   N=500 scripts/callgrind.sh
#   C=64 N=2000 scripts/callgrind.sh  # 64 requests in flight at once
#   scripts/callgrind.sh ratelimit  # the rate limiter alone, over a no-op service, one host
set -euo pipefail
cd "$(dirname "$0")/.."
n=${N:-1000}
concurrency=${C:-1}
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install -y valgrind" >&2; exit 1; }
target=overhead
clients="reqwest scrapewell reqwest-middleware"
if [ "${1:-}" = ratelimit ]; then
    target=ratelimit
    clients="bare limited"
fi
cargo bench -p scrapewell-benches --bench "$target" --no-run 2>/dev/null
bench=$(ls -t target/release/deps/"$target"-* | grep -v '\.d$' | head -n 1)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

count() { # client requests -> total instructions
    valgrind --tool=callgrind --collect-atstart=no \
        --toggle-collect='tokio::runtime::runtime::Runtime::block_on*' \
        --callgrind-out-file="$out/$1-$2" "$bench" --callgrind "$1" --requests "$2" --concurrency "$concurrency" \
        >/dev/null 2>"$out/$1-$2.log"
    sed -n 's/^summary: //p' "$out/$1-$2"
}

printf '%-20s %16s %12s %12s\n' client instructions/req "vs first" difference
base=""
for client in $clients; do
    small=$(count "$client" "$n")
    large=$(count "$client" $((2 * n)))
    per=$(( (large - small) / n ))
    [ -n "$base" ] || base=$per
    printf '%-20s %16d %+11.1f%% %+12d\n' "$client" "$per" "$(echo "($per - $base) * 100 / $base" | bc -l)" $((per - base))
done
