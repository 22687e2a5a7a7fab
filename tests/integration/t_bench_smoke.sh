#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Smoke test of sealstore-bench: one tiny run (--smoke: every scenario and
# baseline at small sizes, a few seconds) must exit 0 and write JSON lines
# that parse, carry the documented keys, and cover every scenario and
# baseline row. No timing is asserted: speed is the bench's output, not a
# test's pass condition.
#
# Exit codes per Automake: 0 pass, 77 skip, 99 hard error (1 fail).

set -u

builddir=${SS_BUILDDIR:-.}
bench=$builddir/bench/sealstore-bench
if [ ! -x "$bench" ]; then
    echo "t_bench_smoke: $bench not built" >&2
    exit 99
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/t_bench_smoke.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT INT TERM

# The 2 MiB rows map free pool pages when there are enough: hold the test
# programs' pool lock meanwhile (tests/t_helpers.c), as they do, so that
# the pages a test program added for itself are not taken from under it.
if command -v flock >/dev/null 2>&1; then
    exec 9>>/tmp/sealstore-test-hugetlb.lock
    flock 9
fi

json=$tmp/out.json
plot_args=
if command -v gnuplot >/dev/null 2>&1; then
    plot_args="--plot $tmp/out.png"
fi

# stdout (the tables) goes to this test's log; that is what to read when it fails
# shellcheck disable=SC2086
"$bench" --smoke --json "$json" $plot_args
rc=$?
if [ "$rc" -ne 0 ]; then
    echo "t_bench_smoke: sealstore-bench --smoke exited $rc" >&2
    exit 1
fi
if [ ! -s "$json" ]; then
    echo "t_bench_smoke: no JSON written" >&2
    exit 1
fi

# scenario:metric rows every run must file (skipped rows count: they carry
# the reason, e.g. spilling not built or no hugepages)
required="
baseline:memset baseline:memset_zeros baseline:memcpy baseline:first_touch
baseline:populate_write
segment:seg_create segment:seg_destroy
pool:take_warm_p50 pool:take_warm_p99 pool:take_cold_p50 pool:take_cold_p99
pool:populator_rate pool:pool_fill_wall
alloc:salloc_ops alloc:salloc_waste alloc:salloc_segment_slack
alloc:salloc_segment_churn alloc:salloc_bookkeeping
ipc:rtt_ops ipc:rtt_p50 ipc:rtt_p99 ipc:rtt_one_cpu_ops ipc:rtt_one_cpu_p50
ipc:shm_write ipc:shm_write_ops
ipc:shm_read_ops ipc:sock_copy ipc:sock_copy_p50
put:put_warm_ops put:put_warm_p50 put:put_warm_gbps put:put_exhausted_gbps
put:put_call_ops put:put_call_p50 put:put_many_objs
put:shape_put put:shape_putv put:shape_create_memset
get:get_ops get:get_gbps get:get_p50 get:get_p99 get:bookkeeping_per_object
get:small_waste
batch:batch_get_ids batch:single_get_ids batch:batch_put_ids
e2e:e2e_p50 e2e:e2e_p99
clients:clients_ops clients:clients_gbps
seal:seal_us
spill:spill_gbps spill:restore_gbps spill:put_pressure_gbps spill:restore_get_p50
"

fail=0
if command -v python3 >/dev/null 2>&1; then
    python3 - "$json" $required <<'EOF' || fail=1
import json, sys

path, required = sys.argv[1], sys.argv[2:]
keys = {"scenario", "size", "clients", "metric", "value", "unit", "min", "max",
        "baseline", "ratio"}
seen, bad, sizes = set(), 0, {}
SHAPES = ("put:shape_put", "put:shape_putv", "put:shape_create_memset")
with open(path) as f:
    for n, line in enumerate(f, 1):
        try:
            row = json.loads(line)
        except ValueError as e:
            print(f"line {n}: not JSON ({e}): {line.strip()[:120]}")
            bad += 1
            continue
        if not isinstance(row, dict):
            print(f"line {n}: not an object")
            bad += 1
            continue
        missing = keys - row.keys()
        if missing:
            print(f"line {n}: missing keys {sorted(missing)}")
            bad += 1
        # a row is a number, or null with the reason it was skipped
        if row.get("value") is None and not row.get("skipped"):
            print(f"line {n}: no value and no skip reason: {line.strip()[:120]}")
            bad += 1
        if not isinstance(row.get("clients"), int) or row["clients"] < 1:
            print(f"line {n}: clients is not a positive integer")
            bad += 1
        seen.add(f"{row.get('scenario')}:{row.get('metric')}")
        sizes.setdefault(f"{row.get('scenario')}:{row.get('metric')}", set()).add(row.get("size"))
absent = [r for r in required if r not in seen]
for r in absent:
    print(f"row missing: {r}")
# every put call shape at every put size of the run, beside memcpy
for m in SHAPES:
    gap = sizes.get("put:put_warm_gbps", set()) - sizes.get(m, set())
    if gap:
        print(f"{m}: no row at sizes {sorted(gap)}")
        absent.append(m)
print(f"{n} JSON lines, {len(seen)} scenario:metric pairs, {bad} bad, {len(absent)} absent")
sys.exit(1 if bad or absent else 0)
EOF
else
    # no python3: the same checks, coarser
    keys='"scenario" "size" "clients" "metric" "value" "unit" "min" "max" "baseline" "ratio"'
    while IFS= read -r line; do
        case $line in
        "{"*"}") ;;
        *) echo "not a JSON object: $line"; fail=1 ;;
        esac
        for k in $keys; do
            case $line in
            *"$k":*) ;;
            *) echo "missing $k: $line"; fail=1 ;;
            esac
        done
    done <"$json"
    for r in $required; do
        s=${r%%:*}
        m=${r#*:}
        grep -q "\"scenario\":\"$s\".*\"metric\":\"$m\"" "$json" ||
            { echo "row missing: $r"; fail=1; }
    done
fi

if [ -n "$plot_args" ]; then
    # a PNG starts with \211PNG
    if ! head -c 4 "$tmp/out.png" 2>/dev/null | grep -q PNG; then
        echo "t_bench_smoke: --plot wrote no PNG" >&2
        fail=1
    fi
fi

exit $fail
