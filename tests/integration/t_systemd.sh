#!/bin/sh
# SPDX-License-Identifier: MIT
#
# contrib/systemd/sealstored.service, as `make` builds it, against systemd's
# own checker:
#  - `systemd-analyze verify` has nothing to say (ExecStart pointed at this
#    build's daemon, which must exist; the man page the unit's
#    Documentation= names is looked up in this tree's man/);
#  - `systemd-analyze security --offline=yes` rates its exposure at most
#    1.0 ("SAFE"; it is 0.6 now: a dropped hardening option shows);
#  - the settings the README and sealstored(8) promise are there: Type=notify,
#    the socket under RuntimeDirectory=, spilling under StateDirectory=,
#    the client group, the system user, and SystemCallFilter=@chown after
#    ~@privileged (which holds @chown: without it the daemon cannot give
#    its socket the client group, and fails to start with EPERM).
# Starting it takes systemd as PID 1, which `make check` cannot assume.
#
# Exit codes per Automake: 0 pass, 77 skip (no systemd-analyze: not a
# systemd machine), 99 hard error, 1 fail.

set -u

builddir=${SS_BUILDDIR:-.}
srcdir=${SS_SRCDIR:-.}
unit=$builddir/contrib/systemd/sealstored.service
daemon=$builddir/src/daemon/sealstored

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "t_systemd: systemd-analyze not installed (package systemd): cannot check the unit" >&2
    exit 77
fi
for f in "$unit" "$daemon" "$srcdir/man/sealstored.8"; do
    [ -r "$f" ] || { echo "t_systemd: $f missing (run make first)" >&2; exit 99; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/t_systemd.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT INT TERM
fails=0
fail() {
    echo "t_systemd: $*" >&2
    fails=$((fails + 1))
}

daemon_abs=$(cd "$(dirname "$daemon")" && pwd)/sealstored
sed "s|^ExecStart=[^ ]*|ExecStart=$daemon_abs|" "$unit" >"$tmp/sealstored.service" || exit 99
mkdir -p "$tmp/man/man8" && cp "$srcdir/man/sealstored.8" "$tmp/man/man8/" || exit 99

out=$(cd "$tmp" && MANPATH="$tmp/man" SYSTEMD_LOG_LEVEL=notice \
      systemd-analyze verify "$tmp/sealstored.service" 2>&1)
rc=$?
if [ $rc -ne 0 ] || [ -n "$out" ]; then
    fail "systemd-analyze verify (exit $rc):"
    printf '%s\n' "$out" >&2
fi

# --threshold counts in tenths of the printed level
if ! out=$(systemd-analyze security --offline=yes --threshold=10 "$tmp/sealstored.service" 2>&1); then
    fail "exposure above 1.0:"
    printf '%s\n' "$out" | grep -v '^✓' >&2
fi

for want in 'Type=notify' 'RuntimeDirectory=sealstore' 'StateDirectory=sealstore' \
        'Environment=SEALSTORE_SOCKET=%t/sealstore/sealstore.sock' \
        'Environment=SEALSTORE_SPILL_DIR=%S/sealstore/spill' \
        'Environment=SEALSTORE_SOCKET_GROUP=sealstore' 'User=sealstore' \
        'RestrictAddressFamilies=AF_UNIX' 'MemoryDenyWriteExecute=yes' 'NoNewPrivileges=yes' \
        'SystemCallFilter=@chown' 'RestartPreventExitStatus=2'; do
    grep -qx "$want" "$unit" || fail "the unit lacks $want"
done
grep -q '^u sealstore ' "$srcdir/contrib/systemd/sealstore.sysusers" ||
    fail "sealstore.sysusers creates no user sealstore"

[ $fails -eq 0 ] || exit 1
exit 0
