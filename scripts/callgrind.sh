#!/usr/bin/env bash
# Instructions per request for each client, counted by callgrind: the difference between a run
# of 2N and a run of N requests (at concurrency 1, or C), divided by N, so that start-up cancels out.
# The same binary gives the same count on a busy or an idle machine, at any path. What still
# moves it is where glibc's malloc finds room, which depends on what the heap held before: bare
# reqwest's count moves by up to 1.3k instructions with it. So each client is counted over L
# heap layouts (5 by default; layout k holds k blocks of assorted sizes before the client is
# built), and the table shows the median and the range. Only the requests are counted, not the
# clients' construction (where the rate limiter's clock calibrates the CPU's counter for as long
# as that takes).
#
#   scripts/callgrind.sh              # N = 1000, 5 layouts
#   N=500 L=3 scripts/callgrind.sh
#   C=64 N=2000 scripts/callgrind.sh  # 64 requests in flight at once
#   scripts/callgrind.sh ratelimit    # the rate limiter alone, over a no-op service, one host
#   scripts/callgrind.sh footprint    # the code each request runs through, in cache lines
#   C=64 scripts/callgrind.sh cache   # first-level cache misses per request, simulated
#   CLIENTS="reqwest scrapewell" scripts/callgrind.sh   # only these of the bench's clients
set -euo pipefail
cd "$(dirname "$0")/.."
n=${N:-1000}
concurrency=${C:-1}
layouts=${L:-5}
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install -y valgrind" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

built() { # bench -> the path of its executable, wherever CARGO_TARGET_DIR puts it
    local path
    path=$(cargo bench -p scrapewell-benches --bench "$1" --no-run 2>&1 |
        sed -n 's/^ *Executable .*(\(.*\))$/\1/p' | tail -n 1) || true
    [ -n "$path" ] || { echo "the $1 bench does not build: cargo bench -p scrapewell-benches --bench $1 --no-run" >&2; exit 1; }
    echo "$path"
}

vs_first() { # count first -> how much more than first, in percent
    echo "($1 - $2) * 100 / $2" | bc -l
}

counted() { # file client requests layout [valgrind option...] -> the requests counted into file
    local file=$1 client=$2 requests=$3 layout=$4 options=()
    shift 4
    if [ "$bench_name" = overhead ]; then
        options=(--concurrency "$concurrency" --heap-layout "$layout")
    fi
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect="$bench_name::counted" "$@" \
        --callgrind-out-file="$file" "$bench" --callgrind "$client" --requests "$requests" \
        "${options[@]}" >/dev/null 2>"$file.log"
}

per_request() { # client layout [valgrind option...] -> each event of the summary, per request
    local client=$1 layout=$2
    shift 2
    counted "$out/small-$client-$layout" "$client" "$n" "$layout" "$@" &
    counted "$out/large-$client-$layout" "$client" $((2 * n)) "$layout" "$@"
    wait
    paste -d' ' <(sed -n 's/^summary: //p' "$out/small-$client-$layout") \
        <(sed -n 's/^summary: //p' "$out/large-$client-$layout") |
        awk -v n="$n" '{ half = NF / 2; for (i = 1; i <= half; i++) printf "%d%s", ($(i + half) - $i) / n, (i < half ? " " : "\n") }'
}

if [ "${1:-}" = ratelimit ]; then
    bench_name=ratelimit
    bench=$(built ratelimit)
    printf '%-20s %16s %12s %12s\n' client instructions/req "vs first" difference
    base=""
    for client in bare limited; do
        per=$(per_request "$client" 0 | cut -d' ' -f1)
        [ -n "$base" ] || base=$per
        printf '%-20s %16d %+11.1f%% %+12d\n' "$client" "$per" \
            "$(vs_first "$per" "$base")" $((per - base))
    done
    exit 0
fi

bench_name=overhead
bench=$(built overhead)
clients="${CLIENTS:-reqwest scrapewell reqwest-middleware http-round-trip}"

if [ "${1:-}" = cache ]; then
    # First-level cache misses a request (2N minus N requests, one layout), by callgrind's
    # simulation of this machine's caches: 32 KiB of instructions, 48 KiB of data, 2 MiB behind
    # them. CPU time follows these more than instructions: the http round trip runs some 3k
    # instructions more than bare reqwest and misses 65 times more, and costs a third of what
    # the stack costs, which runs fewer instructions and misses some 800 times more.
    printf '%-20s %14s %12s %12s %12s %10s\n' client instructions I1-misses D1-misses \
        "L1 misses" "vs first"
    base=""
    for client in $clients; do
        # The summary's events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw.
        read -r ir _ _ i1 dr dw _ <<<"$(per_request "$client" 0 --cache-sim=yes \
            --I1=32768,8,64 --D1=49152,12,64 --LL=2097152,16,64)"
        total=$((i1 + dr + dw))
        [ -n "$base" ] || base=$total
        printf '%-20s %14d %12d %12d %12d %+9.1f%%\n' "$client" "$ir" "$i1" $((dr + dw)) \
            "$total" "$(vs_first "$total" "$base")"
    done
    exit 0
fi

if [ "${1:-}" = footprint ]; then
    # The 64-byte lines of code holding an instruction that ran at least once a request (N
    # requests, one layout): what a request must bring into the instruction cache. A client that
    # sleeps between requests can wake with cold caches, and fetch each of these lines again.
    printf '%-20s %16s %10s %10s\n' client lines/request KiB "vs first"
    base=""
    for client in $clients; do
        file="$out/footprint-$client"
        counted "$file" "$client" "$n" 0 --dump-instr=yes
        # Positions are absolute (hex), relative to the last (+N, -N) or the same as the last (*); the cost
        # after a `calls=` line is the callee's, not its call instruction's. mawk keeps numbers
        # as doubles and prints large ones rounded: keys are written out with %.0f.
        lines=$(awk -v runs="$n" '
            function hex(s,   v, i) {
                v = 0
                s = tolower(substr(s, 3))
                for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
                return v
            }
            /^calls=/ { call = 1; next }
            /^[0-9+*-]/ {
                if ($1 == "*") at = last
                else if ($1 ~ /^[+]/) at = last + substr($1, 2)
                else if ($1 ~ /^-/) at = last - substr($1, 2)
                else at = hex($1)
                last = at
                if (call) { call = 0; next }
                ran[sprintf("%.0f", at)] += $3
            }
            END {
                for (at in ran) if (ran[at] >= runs) line[sprintf("%.0f", int(at / 64))] = 1
                for (l in line) count++
                print count
            }' "$file")
        [ -n "$base" ] || base=$lines
        printf '%-20s %16d %10d %+9.1f%%\n' "$client" "$lines" $((lines * 64 / 1024)) \
            "$(vs_first "$lines" "$base")"
    done
    exit 0
fi

printf '%-20s %16s %10s %22s\n' client instructions/req "vs first" "range over layouts"
base=""
for client in $clients; do
    counts=$(for layout in $(seq 0 $((layouts - 1))); do
        per_request "$client" "$layout" | cut -d' ' -f1
    done | sort -n)
    median=$(echo "$counts" | sed -n "$(( (layouts + 1) / 2 ))p")
    [ -n "$base" ] || base=$median
    printf '%-20s %16d %+9.1f%% %22s\n' "$client" "$median" \
        "$(vs_first "$median" "$base")" \
        "$(echo "$counts" | head -n 1) to $(echo "$counts" | tail -n 1)"
done
