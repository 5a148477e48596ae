#!/usr/bin/env bash
# The one place that installs operating-system packages, for the Makefile and .ci/run alike:
#   scripts/system-packages.sh NEED...     NEED: java maven postgresql go shellcheck chromium
# Each need is checked first and installed with Debian's apt-get only when missing, so a machine
# that has everything runs no apt at all. Without root, a missing need is an error that names the
# package to install.
set -euo pipefail

# Debian packages of each need.
declare -A PACKAGES=(
    [java]="openjdk-17-jdk-headless"
    [maven]="maven"
    [postgresql]="postgresql"
    [go]="golang-go"
    [shellcheck]="shellcheck"
    [chromium]="chromium chromium-driver"
)

log() {
    echo "system-packages: $*" >&2
}

has_postgresql() {
    compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || command -v pg_ctl >/dev/null
}

# is_present NEED: true when what the need provides is already on this machine.
is_present() {
    case "$1" in
        java) command -v java >/dev/null ;;
        maven) command -v mvn >/dev/null ;;
        postgresql) has_postgresql ;;
        go) command -v go >/dev/null ;;
        shellcheck) command -v shellcheck >/dev/null ;;
        chromium) command -v chromium >/dev/null && command -v chromedriver >/dev/null ;;
    esac
}

# Debian's postgresql package would create and start a system-wide cluster on port 5432, the
# port the local stack's own server needs.
before_postgresql() {
    mkdir -p /etc/postgresql-common/createcluster.d
    cat >/etc/postgresql-common/createcluster.d/no-main-cluster.conf <<'CONF'
# Written by the mobile-usage platform's scripts/system-packages.sh: it runs its own cluster.
create_main_cluster = false
CONF
}

main() {
    local need missing=() packages=()
    for need in "$@"; do
        if [[ -z "${PACKAGES[${need}]+set}" ]]; then
            log "unknown need '${need}'; known: ${!PACKAGES[*]}"
            exit 2
        fi
        if ! is_present "${need}"; then
            missing+=("${need}")
            read -ra words <<<"${PACKAGES[${need}]}"
            packages+=("${words[@]}")
        fi
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        return
    fi
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
        log "missing ${missing[*]}: install them (Debian: sudo apt-get install -y ${packages[*]})"
        exit 1
    fi
    if [[ " ${missing[*]} " == *" postgresql "* ]]; then
        before_postgresql
    fi
    log "installing ${packages[*]} (first run only)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
}

main "$@"
