#!/bin/sh
# SPDX-License-Identifier: MIT
#
# `sealstore doctor` on this machine:
#  - plain and --json run; the JSON parses and has every key sealstore(1)
#    documents; the exit status is the JSON's "exit" and matches the worst
#    finding (0 notes only, 1 performance, 2 missing), and plain mode exits
#    the same;
#  - with a sealstored running on a private socket it reports that store:
#    its pid, its spill directory (read from its command line), its limits
#    and its stats;
#  - --spill-dir on a tmpfs is a performance finding (spilling there frees
#    no memory); --spill-dir off is reported as off;
#  - usage errors exit 2;
#  - as root, with 2 MiB hugepages added to the pool, it reports them (the
#    pages added are taken back at exit, whatever happens). Meanwhile it
#    holds the test programs' pool lock, as they do (tests/t_helpers.c), so
#    that no other test program sizes the pool under it, and it counts
#    persistent pages (nr_hugepages less surplus_hugepages, what writing
#    nr_hugepages sets): pages other programs still map stay as surplus.
# Machine facts are compared with what sysfs says, never with fixed values.
#
# Exit codes per Automake: 0 pass, 77 skip, 99 hard error (1 fail).

set -u

builddir=${SS_BUILDDIR:-.}
cli=$builddir/tools/sealstore
daemon=$builddir/src/daemon/sealstored
fails=0

fail() {
    echo "t_doctor: $*" >&2
    fails=$((fails + 1))
}

for p in "$cli" "$daemon"; do
    [ -x "$p" ] || { echo "t_doctor: $p not built" >&2; exit 99; }
done
if ! command -v python3 >/dev/null 2>&1; then
    echo "t_doctor: python3 not installed: cannot check the JSON" >&2
    exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/t_doctor.XXXXXX") || exit 99
hp=/sys/kernel/mm/hugepages/hugepages-2048kB
pool=$hp/nr_hugepages
pool_added=0
dpid=
# The pool's persistent pages (the surplus read on both sides of
# nr_hugepages until the two agree: a surplus page freed between the reads
# changes both).
persistent() {
    for _ in 1 2 3 4 5 6 7 8; do
        s1=$(cat "$hp/surplus_hugepages") n=$(cat "$pool") s2=$(cat "$hp/surplus_hugepages")
        [ "$s1" = "$s2" ] && break
    done
    echo $((n - s2))
}
# Take back the pages this test added, from whatever the pool is now.
give_back() {
    [ "$pool_added" -gt 0 ] && echo $(($(persistent) - pool_added)) >"$pool"
    pool_added=0
}
cleanup() {
    [ -n "$dpid" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
    give_back
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 99' INT TERM

# Checks one JSON document: parses, documented keys, exit == status.
# $1 file, $2 the doctor's exit status, then python expressions on `d`
# that must hold.
check_json() {
    file=$1 rc=$2
    shift 2
    python3 -m json.tool "$file" >/dev/null || { fail "$file: not JSON"; return; }
    python3 - "$file" "$rc" "$@" <<'EOF' || fail "$file: see above"
import json, sys
d = json.load(open(sys.argv[1]))
rc = int(sys.argv[2])
keys = {
    "": ["version", "kernel", "status", "exit", "memory", "hugepages", "thp", "io_uring",
         "numa", "dev_shm", "limits", "cgroup", "spill", "kernel_features", "store",
         "findings"],
    "memory": ["total", "available"],
    "thp": ["shmem_enabled", "shmem_enabled_2M", "usable"],
    "io_uring": ["usable", "error", "io_uring_disabled"],
    "numa": ["error", "nodes", "node_ids", "can_bind"],
    "limits": ["of", "pid", "memlock", "nofile"],
    "cgroup": ["of", "version", "path", "memory_max", "memory_high", "memory_current"],
    "spill": ["dir", "source", "off", "probed", "error", "fs", "o_direct", "dio_align", "free"],
    "kernel_features": ["memfd_seal", "noexec_seal", "future_write", "populate_write",
                        "pidfd_open"],
    "store": ["socket", "running", "error"],
}
bad = []
for sec, ks in keys.items():
    obj = d if sec == "" else d.get(sec)
    if not isinstance(obj, dict):
        bad.append("%s is not an object" % sec)
        continue
    bad += ["missing %s.%s" % (sec or "top", k) for k in ks if k not in obj]
for size, h in d.get("hugepages", {}).items():
    if h is not None:
        bad += ["missing hugepages.%s.%s" % (size, k) for k in
                ["page_size", "total", "free", "reserved", "surplus", "overcommit",
                 "available"] if k not in h]
if set(d.get("hugepages", {})) != {"2M", "1G"}:
    bad.append("hugepages keys %s" % sorted(d.get("hugepages", {})))
for k in ["memlock", "nofile"]:
    if set(d["limits"][k]) != {"soft", "hard"}:
        bad.append("limits.%s keys" % k)
if d["store"].get("running"):
    bad += ["missing store.%s" % k for k in
            ["pid", "capacity", "resident_bytes", "objects", "object_bytes",
             "bytes_by_backing", "backing_fallbacks", "pool_ready_bytes", "spill"]
            if k not in d["store"]]
sev = {"note": 0, "performance": 1, "missing": 2}
worst = 0
for f in d["findings"]:
    if set(f) != {"key", "severity", "what", "fix", "gain"}:
        bad.append("finding keys %s" % sorted(f))
    elif f["severity"] not in sev or not f["what"] or not f["fix"]:
        bad.append("finding %s" % f)
    else:
        worst = max(worst, sev[f["severity"]])
if d["exit"] != rc or worst != rc:
    bad.append("exit status %d, JSON exit %s, worst finding %d" % (rc, d["exit"], worst))
if d["status"] != ["ok", "performance", "missing"][worst]:
    bad.append("status %s for worst %d" % (d["status"], worst))
for expr in sys.argv[3:]:
    try:
        ok = eval(expr, {"d": d, "find": lambda k: [f for f in d["findings"] if f["key"] == k]})
    except Exception as e:
        ok = False
        expr += " (%r)" % e
    if not ok:
        bad.append("does not hold: " + expr)
for b in bad:
    print("t_doctor: " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
}

# Nothing listens on this socket: the doctor looks at the machine only.
nosock=$tmp/none.sock

# ----------------------------------------------------------- plain, JSON
"$cli" --socket "$nosock" doctor >"$tmp/plain.txt" 2>"$tmp/plain.err"
prc=$?
cat "$tmp/plain.txt"
case $prc in 0|1|2) ;; *) fail "plain doctor exited $prc"; cat "$tmp/plain.err" >&2 ;; esac
for w in "hugepages 2M" "hugepages 1G" "shmem THP" "io_uring" "numa" "/dev/shm" "memlock" \
         "open files" "cgroup" "spill dir" "kernel" "store" "Result:"; do
    grep -q "^$w" "$tmp/plain.txt" || fail "plain output has no line for '$w'"
done
"$cli" --socket "$nosock" --json doctor >"$tmp/d.json" 2>"$tmp/d.err"
jrc=$?
[ "$jrc" = "$prc" ] || fail "plain exited $prc, --json $jrc"
sysnr=$(cat "$pool" 2>/dev/null || echo none)
check_json "$tmp/d.json" "$jrc" \
    'd["store"]["running"] is False and d["store"]["error"]' \
    'd["limits"]["of"] == "doctor" and d["cgroup"]["of"] == "doctor"' \
    "d['hugepages']['2M'] is None if '$sysnr' == 'none' else d['hugepages']['2M']['page_size'] == 2097152" \
    'd["kernel_features"]["memfd_seal"] is True' \
    'd["numa"]["nodes"] >= 1 or d["numa"]["error"]'

# the kernel's own answer for the limits this process has
python3 - "$tmp/d.json" "$(ulimit -Hn)" <<'EOF' || fail "nofile limit differs from ulimit -Hn"
import json, sys
d = json.load(open(sys.argv[1]))
h = d["limits"]["nofile"]["hard"]
sys.exit(0 if (h is None and sys.argv[2] == "unlimited") or str(h) == sys.argv[2] else 1)
EOF

# ------------------------------------------------------- spill directory
if [ -d /dev/shm ] && [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ] && [ -w /dev/shm ]; then
    "$cli" --socket "$nosock" --json doctor --spill-dir /dev/shm >"$tmp/shm.json" 2>"$tmp/shm.err"
    check_json "$tmp/shm.json" $? \
        'd["spill"]["dir"] == "/dev/shm" and d["spill"]["source"] == "--spill-dir"' \
        'd["spill"]["fs"] == "tmpfs" and d["spill"]["o_direct"] is False' \
        'any(f["severity"] == "performance" for f in find("spill"))'
fi
"$cli" --socket "$nosock" --json doctor --spill-dir off >"$tmp/off.json" 2>"$tmp/off.err"
check_json "$tmp/off.json" $? 'd["spill"]["off"] is True and d["spill"]["dir"] is None'
mkdir "$tmp/sd" || exit 99
"$cli" --socket "$nosock" --json doctor --spill-dir "$tmp/sd/not/yet" >"$tmp/nyd.json" 2>"$tmp/nyd.err"
check_json "$tmp/nyd.json" $? "d['spill']['probed'] == '$tmp/sd' and d['spill']['error'] is None"
[ -z "$(ls -A "$tmp/sd")" ] || fail "the O_DIRECT probe left files behind: $(ls -A "$tmp/sd")"

# ------------------------------------------------------------ usage errors
"$cli" --socket "$nosock" doctor extra >/dev/null 2>&1
[ $? = 2 ] || fail "doctor with an argument did not exit 2"
"$cli" --socket "$nosock" doctor --spill-dir >/dev/null 2>&1
[ $? = 2 ] || fail "doctor --spill-dir without a value did not exit 2"
"$cli" --socket "$nosock" --embed doctor >/dev/null 2>&1
[ $? = 2 ] || fail "--embed doctor did not exit 2"
"$cli" doctor --help | grep -q -- "--spill-dir" || fail "doctor --help does not show --spill-dir"

# --------------------------------------------------------- a running store
sock=$tmp/store.sock
SEALSTORE_CAPACITY=64M "$daemon" --socket "$sock" --spill-dir "$tmp/spill" 2>"$tmp/daemon.err" &
dpid=$!
# the store is up once stat answers (bounded: 10 s)
up=0
for _ in $(seq 100); do
    if "$cli" --socket "$sock" stat >/dev/null 2>&1; then
        up=1
        break
    fi
    kill -0 "$dpid" 2>/dev/null || break
    sleep 0.1
done
if [ "$up" = 1 ]; then
    echo hello >"$tmp/obj"
    "$cli" --socket "$sock" put "$tmp/obj" >/dev/null || fail "put to the store failed"
    "$cli" --socket "$sock" doctor >"$tmp/store.txt" 2>"$tmp/store.err"
    src=$?
    cat "$tmp/store.txt"
    grep -q "^store  *running at $sock, pid $dpid" "$tmp/store.txt" ||
        fail "plain output does not report the store at $sock, pid $dpid"
    "$cli" --socket "$sock" --json doctor >"$tmp/store.json" 2>"$tmp/storej.err"
    jrc=$?
    [ "$jrc" = "$src" ] || fail "with a store: plain exited $src, --json $jrc"
    check_json "$tmp/store.json" "$jrc" \
        "d['store']['running'] is True and d['store']['pid'] == $dpid" \
        "d['store']['socket'] == '$sock' and d['store']['capacity'] == 64 << 20" \
        'd["store"]["objects"] == 1 and d["store"]["spill"]["on"] is True' \
        "d['spill']['dir'] == '$tmp/spill' and d['spill']['source'] == \"the running store's\"" \
        "d['limits']['of'] == 'store' and d['limits']['pid'] == $dpid"
    # the store's raised open-file limit: soft == hard, which the doctor's need not be
    python3 -c "import json,sys; n=json.load(open('$tmp/store.json'))['limits']['nofile']; sys.exit(n['soft'] != n['hard'])" ||
        fail "the store's open-file limit was not read from /proc/$dpid (soft != hard)"
else
    cat "$tmp/daemon.err" >&2
    fail "sealstored did not come up on $sock"
fi
kill "$dpid" 2>/dev/null
wait "$dpid" 2>/dev/null
dpid=

# ------------------------------------------------- hugepages (root only)
if [ "$(id -u)" = 0 ] && [ -w "$pool" ] && ! command -v flock >/dev/null 2>&1; then
    echo "t_doctor: no flock(1) to hold the test programs' pool lock: the hugepage part is skipped" >&2
elif [ "$(id -u)" = 0 ] && [ -w "$pool" ]; then
    exec 9>>/tmp/sealstore-test-hugetlb.lock
    flock 9
    pool_orig=$(persistent)
    add=8
    echo $((pool_orig + add)) >"$pool" 2>/dev/null
    now=$(persistent)
    [ "$now" -gt "$pool_orig" ] && pool_added=$((now - pool_orig))
    if [ "$now" -ge $((pool_orig + add)) ]; then
        "$cli" --socket "$nosock" doctor >"$tmp/hp.txt" 2>"$tmp/hp.err"
        hrc=$?
        cat "$tmp/hp.txt"
        # the pool may be shared with other tests: compare with what we added
        n=$(sed -n 's/^hugepages 2M  *\([0-9]*\) pages.*/\1/p' "$tmp/hp.txt")
        [ -n "$n" ] && [ "$n" -ge "$add" ] ||
            fail "plain output shows '$n' 2 MiB pages with $add added"
        "$cli" --socket "$nosock" --json doctor >"$tmp/hp.json" 2>"$tmp/hpj.err"
        check_json "$tmp/hp.json" $? \
            "d['hugepages']['2M']['total'] >= $add" \
            "d['hugepages']['2M']['available'] == 0 or not [f for f in find('hugepages_2M') if f['severity'] == 'performance']"
        [ "$hrc" -le 2 ] || fail "doctor exited $hrc with hugepages"
    else
        echo "t_doctor: could not add $add 2 MiB hugepages (pool $pool_orig -> $now): part skipped" >&2
    fi
    give_back
    exec 9>&-
else
    echo "t_doctor: not root: the hugepage part is skipped" >&2
fi

# a sanitizer build reports on stderr and exits 1, which is also a doctor
# verdict: its reports must not hide behind one
for e in "$tmp"/*.err; do
    if grep -q -E "Sanitizer|runtime error:" "$e"; then
        cat "$e" >&2
        fail "sanitizer report in $e"
    fi
done

[ "$fails" = 0 ] || exit 1
exit 0
