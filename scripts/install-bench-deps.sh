#!/bin/sh
# What `faka-bench --proxy nginx` needs besides the two binaries: Debian's
# nginx (TLS termination in front of faka, docs/BENCHMARKS.md "Through a
# proxy") and openssl (the self-signed certificate made at each start), and
# perf for scripts/profile.sh. The bench only runs nginx itself, with its own
# config in a temp dir: the package's service is stopped and left disabled so
# it holds no port of the machine.
set -eu
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
missing=
command -v nginx >/dev/null 2>&1 || missing="$missing nginx"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
command -v perf >/dev/null 2>&1 || missing="$missing linux-perf"
if [ -n "$missing" ]; then
    $SUDO apt-get update
    # The package's postinst starts nginx on port 80; a policy-rc.d that
    # answers 101 keeps it from starting at all (one already there is kept).
    policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod +x /usr/sbin/policy-rc.d
        policy=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $missing
    if [ -n "$policy" ]; then
        $SUDO rm -f /usr/sbin/policy-rc.d
    fi
fi
nginx -v
openssl version
