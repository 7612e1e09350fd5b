#!/usr/bin/env bash
# Make sure the services the test suite needs are up (run by `make test`; idempotent):
#   - PostgreSQL on 127.0.0.1:5432 with a superuser role `root` and a database `test`
#     reachable with trust auth (installed with apt-get if PostgreSQL is missing);
#   - a Docker engine answering `docker info` (docker.io installed and dockerd started
#     with the vfs storage driver if needed; its log goes to /tmp/dockerd.log);
#   - that engine in an active swarm (`docker swarm init --advertise-addr 127.0.0.1` if not);
#   - /bin/busybox (busybox-static) and git;
#   - /usr/bin/chromium (Debian's chromium), the browser of the dashboard tests (tests/ui,
#     driven by Playwright; no `playwright install`, nothing downloaded at test time);
#   - an image registry (Debian's docker-registry) on 127.0.0.1:5000 with tag deletion enabled,
#     storage under /tmp (its log goes to /tmp/docker-registry.log);
#   - Prometheus (Debian's prometheus) on 127.0.0.1:9090 scraping itself every second, for the
#     rollout analyses (its log goes to /tmp/prometheus.log).
# Debian only, run as root. Prints one line per service; exits non-zero if one can't be brought up.
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432
DOCKERD_LOG=/tmp/dockerd.log
DOCKER_WAIT=60
PG_WAIT=30

export DEBIAN_FRONTEND=noninteractive

die() {
    echo "test-services: error: $*" >&2
    exit 1
}

need_root() {
    [ "$(id -u)" -eq 0 ] || die "$1 needs root (run as root, or: sudo $0)"
}

APT_UPDATED=0
apt_install() {
    need_root "installing $*"
    command -v apt-get >/dev/null 2>&1 || die "cannot install $* automatically: apt-get not found (Debian/Ubuntu only); install it by hand"
    if [ "$APT_UPDATED" -eq 0 ]; then
        apt-get update -qq || die "apt-get update failed"
        APT_UPDATED=1
    fi
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null || die "apt-get install $* failed"
}

# ------------------------------------------------------------------------ PostgreSQL

pg_ready() {
    command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h "$PG_HOST" -p "$PG_PORT"
}

pg_cluster_version() {
    # newest version that has a "main" cluster configured, if any
    local dir
    for dir in $(ls -d /etc/postgresql/*/main 2>/dev/null | sort -V -r); do
        if [ -f "$dir/postgresql.conf" ]; then
            basename "$(dirname "$dir")"
            return 0
        fi
    done
    return 1
}

as_postgres() {
    (cd /tmp && runuser -u postgres -- "$@")
}

wait_pg() {
    local i
    for ((i = 0; i < PG_WAIT * 2; i++)); do
        pg_ready && return 0
        sleep 0.5
    done
    return 1
}

ensure_postgresql() {
    local did="" fresh=0 version
    if ! pg_ready; then
        if ! version=$(pg_cluster_version); then
            if [ ! -d /usr/lib/postgresql ] || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
                apt_install postgresql
                did="installed postgresql, "
            fi
            if ! version=$(pg_cluster_version); then
                # package present (or just installed) but no cluster: create one
                version=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1 || true)
                [ -n "$version" ] || die "PostgreSQL is installed but /usr/lib/postgresql is empty"
                pg_createcluster "$version" main >/dev/null || die "pg_createcluster $version main failed"
                did="${did}created cluster $version/main, "
            fi
            fresh=1
        fi
        if [ "$fresh" -eq 1 ]; then
            # Fresh install only: trust local TCP connections (tests connect as root without a password).
            local hba="/etc/postgresql/$version/main/pg_hba.conf"
            if ! grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
                sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
                did="${did}trusted 127.0.0.1 in pg_hba.conf, "
            fi
        fi
        need_root "starting PostgreSQL"
        # "already running" (exit 2, e.g. started by the package's postinst) is fine: reload then.
        if ! pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/tmp/pg_ctlcluster.err; then
            grep -qi 'already running' /tmp/pg_ctlcluster.err || {
                cat /tmp/pg_ctlcluster.err >&2
                die "pg_ctlcluster $version main start failed"
            }
            pg_ctlcluster --skip-systemctl-redirect "$version" main reload || true
        fi
        wait_pg || die "PostgreSQL $version/main did not become ready on $PG_HOST:$PG_PORT within ${PG_WAIT}s (see /var/log/postgresql/)"
        did="${did}started $version/main, "
    fi

    # Role `root` and database `test` (idempotent; through the local socket as the postgres user).
    if [ "$(id -u)" -eq 0 ] && id postgres >/dev/null 2>&1; then
        if [ "$(as_postgres psql -p "$PG_PORT" -Atc "select 1 from pg_roles where rolname = 'root'" 2>/dev/null)" != "1" ]; then
            as_postgres psql -p "$PG_PORT" -qc 'create role root superuser login' >/dev/null ||
                die "could not create the PostgreSQL role root"
            did="${did}created role root, "
        fi
        if [ "$(as_postgres psql -p "$PG_PORT" -Atc "select 1 from pg_database where datname = 'test'" 2>/dev/null)" != "1" ]; then
            as_postgres psql -p "$PG_PORT" -qc 'create database test owner root' >/dev/null ||
                die "could not create the PostgreSQL database test"
            did="${did}created database test, "
        fi
    fi

    # The check that matters: what the tests do.
    local err
    if ! err=$(psql "host=$PG_HOST port=$PG_PORT user=root dbname=test connect_timeout=5" -Atqc 'select 1' 2>&1 >/dev/null); then
        die "PostgreSQL is up but root@$PG_HOST:$PG_PORT/test is not usable: $err (tests need trust auth for root on $PG_HOST)"
    fi
    if [ -z "$did" ]; then
        echo "postgresql: running on $PG_HOST:$PG_PORT, role root and database test present"
    else
        echo "postgresql: ${did%, }; ready on $PG_HOST:$PG_PORT (root/test)"
    fi
}

# ------------------------------------------------------------------------ Docker

docker_ok() {
    command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1
}

docker_version() {
    timeout 20 docker version --format '{{.Server.Version}}' 2>/dev/null || echo "?"
}

ensure_docker() {
    local did=""
    if ! docker_ok; then
        if ! command -v dockerd >/dev/null 2>&1; then
            apt_install docker.io busybox-static
            did="installed docker.io, "
        fi
        command -v docker >/dev/null 2>&1 || die "dockerd exists but the docker CLI is missing"
        if pgrep -x dockerd >/dev/null 2>&1; then
            did="${did}waited for the running dockerd, "
        else
            need_root "starting dockerd"
            # setsid + nohup: the daemon outlives this script and the terminal/make that ran it.
            setsid nohup dockerd --storage-driver vfs >>"$DOCKERD_LOG" 2>&1 </dev/null &
            did="${did}started dockerd (vfs, log $DOCKERD_LOG), "
        fi
        local i
        for ((i = 0; i < DOCKER_WAIT; i++)); do
            docker_ok && break
            if ! pgrep -x dockerd >/dev/null 2>&1; then
                tail -n 20 "$DOCKERD_LOG" >&2 || true
                die "dockerd exited while starting (log above, full log in $DOCKERD_LOG)"
            fi
            sleep 1
        done
        if ! docker_ok; then
            tail -n 20 "$DOCKERD_LOG" >&2 || true
            die "the Docker engine did not answer 'docker info' within ${DOCKER_WAIT}s (log above, full log in $DOCKERD_LOG)"
        fi
    fi
    if [ -z "$did" ]; then
        echo "docker: engine running (server $(docker_version))"
    else
        echo "docker: ${did%, }; engine running (server $(docker_version))"
    fi
}

ensure_swarm() {
    # Swarm services, stacks and rollouts are tested against a real single-node swarm.
    local state
    state=$(timeout 20 docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo "?")
    if [ "$state" = "active" ]; then
        echo "swarm: active"
        return 0
    fi
    need_root "initialising a swarm"
    timeout 60 docker swarm init --advertise-addr 127.0.0.1 >/dev/null ||
        die "docker swarm init --advertise-addr 127.0.0.1 failed (swarm state was '$state')"
    echo "swarm: initialised a single-node swarm (was '$state'; advertise address 127.0.0.1)"
}

ensure_busybox() {
    if [ -x /bin/busybox ]; then
        echo "busybox: /bin/busybox present"
    else
        apt_install busybox-static
        [ -x /bin/busybox ] || die "busybox-static installed but /bin/busybox is still missing"
        echo "busybox: installed busybox-static (/bin/busybox)"
    fi
}

REGISTRY_ADDR=127.0.0.1:5000
REGISTRY_CONFIG=/tmp/docker-registry.yml
REGISTRY_DATA=/tmp/docker-registry-data
REGISTRY_LOG=/tmp/docker-registry.log
REGISTRY_WAIT=30

registry_ok() {
    curl -fsS -m 5 -o /dev/null "http://$REGISTRY_ADDR/v2/" 2>/dev/null
}

ensure_registry() {
    local did=""
    if ! registry_ok; then
        if [ ! -x /usr/bin/docker-registry ]; then
            apt_install docker-registry
            did="installed docker-registry, "
        fi
        need_root "starting docker-registry"
        mkdir -p "$REGISTRY_DATA"
        # Deletion enabled: DELETE /v2/<name>/manifests/<digest> is part of what the tests exercise.
        printf '%s\n' "version: 0.1" "log:" "  level: warn" "storage:" "  filesystem:" \
            "    rootdirectory: $REGISTRY_DATA" "  delete:" "    enabled: true" "http:" \
            "  addr: $REGISTRY_ADDR" >"$REGISTRY_CONFIG"
        setsid nohup /usr/bin/docker-registry serve "$REGISTRY_CONFIG" >>"$REGISTRY_LOG" 2>&1 </dev/null &
        did="${did}started docker-registry (config $REGISTRY_CONFIG, log $REGISTRY_LOG), "
        local i
        for ((i = 0; i < REGISTRY_WAIT * 2; i++)); do
            registry_ok && break
            sleep 0.5
        done
        if ! registry_ok; then
            tail -n 20 "$REGISTRY_LOG" >&2 || true
            die "the registry did not answer http://$REGISTRY_ADDR/v2/ within ${REGISTRY_WAIT}s (log above)"
        fi
    fi
    if [ -z "$did" ]; then
        echo "registry: answering on http://$REGISTRY_ADDR/v2/"
    else
        echo "registry: ${did%, }; answering on http://$REGISTRY_ADDR/v2/"
    fi
}

PROMETHEUS_ADDR=127.0.0.1:9090
PROMETHEUS_CONFIG=/tmp/prometheus-tests.yml
PROMETHEUS_DATA=/tmp/prometheus-tests-data
PROMETHEUS_LOG=/tmp/prometheus.log
PROMETHEUS_WAIT=60

prometheus_ok() {
    curl -fsS -m 5 -o /dev/null "http://$PROMETHEUS_ADDR/-/ready" 2>/dev/null
}

ensure_prometheus() {
    local did=""
    if ! prometheus_ok; then
        if [ ! -x /usr/bin/prometheus ]; then
            apt_install prometheus
            did="installed prometheus, "
        fi
        need_root "starting prometheus"
        # Debian's package starts its own service on :9090 where systemd runs; here nothing
        # runs it, so start one that scrapes itself every second (what the tests query).
        mkdir -p "$PROMETHEUS_DATA"
        printf '%s\n' "global:" "  scrape_interval: 1s" "  evaluation_interval: 1s" "scrape_configs:" \
            "  - job_name: prometheus" "    static_configs:" "      - targets: ['$PROMETHEUS_ADDR']" \
            >"$PROMETHEUS_CONFIG"
        setsid nohup /usr/bin/prometheus --config.file="$PROMETHEUS_CONFIG" \
            --web.listen-address="$PROMETHEUS_ADDR" --storage.tsdb.path="$PROMETHEUS_DATA" \
            >>"$PROMETHEUS_LOG" 2>&1 </dev/null &
        did="${did}started prometheus (config $PROMETHEUS_CONFIG, log $PROMETHEUS_LOG), "
        local i
        for ((i = 0; i < PROMETHEUS_WAIT * 2; i++)); do
            prometheus_ok && break
            sleep 0.5
        done
        if ! prometheus_ok; then
            tail -n 20 "$PROMETHEUS_LOG" >&2 || true
            die "prometheus did not become ready on http://$PROMETHEUS_ADDR within ${PROMETHEUS_WAIT}s (log above)"
        fi
    fi
    if [ -z "$did" ]; then
        echo "prometheus: ready on http://$PROMETHEUS_ADDR"
    else
        echo "prometheus: ${did%, }; ready on http://$PROMETHEUS_ADDR"
    fi
}

ensure_chromium() {
    if [ -x /usr/bin/chromium ]; then
        echo "chromium: /usr/bin/chromium present"
    else
        apt_install chromium
        [ -x /usr/bin/chromium ] || die "chromium installed but /usr/bin/chromium is still missing"
        echo "chromium: installed Debian's chromium (/usr/bin/chromium)"
    fi
}

ensure_git() {
    if command -v git >/dev/null 2>&1; then
        echo "git: $(git --version)"
    else
        apt_install git
        command -v git >/dev/null 2>&1 || die "git installed but not on PATH"
        echo "git: installed $(git --version)"
    fi
}

ensure_postgresql
ensure_docker
ensure_swarm
ensure_busybox
ensure_git
ensure_chromium
ensure_registry
ensure_prometheus
