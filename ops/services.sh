#!/usr/bin/env bash
# Starts what runledger's tests and local runs talk to, when it is not already running:
# PostgreSQL on 127.0.0.1:5432 and NATS with JetStream on 127.0.0.1:4222. Idempotent.
# Uses the Debian packages' commands (pg_ctlcluster, /usr/sbin/nats-server); run as root.
set -euo pipefail

wait_for() { # name, check command
    for _ in $(seq 1 60); do
        if eval "$2" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    echo "services: $1 did not come up" >&2
    return 1
}

if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    echo "services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
    wait_for PostgreSQL "pg_isready -h 127.0.0.1 -p 5432 -q"
fi

# A NATS server greets every connection with an INFO line that says whether JetStream is on.
nats_up() { timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/4222 && head -n 1 <&3 | grep -q "\"jetstream\":true"'; }
if ! nats_up; then
    echo "services: starting NATS with JetStream"
    mkdir -p /var/lib/nats-server
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
    wait_for "NATS JetStream" nats_up
fi
