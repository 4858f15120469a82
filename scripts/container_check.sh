#!/usr/bin/env bash
# Build and run both images on this machine, then compose with two replicas; print one JSON
# summary on stdout (progress goes to stderr). From the repo root, as a user who may run
# docker:
#   scripts/container_check.sh              # everything: builds, runs, compose, monitoring
#   KEEP_IMAGES=1 scripts/container_check.sh   # leave the built images (default: kept too)
# What it does, and the commands it runs, are in README "Deploy" and docs/deployment.md.
#
# Needs docker (any daemon; the classic builder is used, so no buildx), docker-compose 1.29+
# and .venv (scripts/setup.sh). Where Docker Hub is unreachable it first makes the base
# images from Debian packages (scripts/container_bases.sh); elsewhere docker pulls the real
# ones. BASES=debian or BASES=upstream forces either.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "container_check: $*" >&2; }

bases="${BASES:-auto}"
if [ "$bases" = auto ]; then
  if curl -s -m 10 -o /dev/null https://registry-1.docker.io/v2/; then
    bases=upstream
  else
    bases=debian
  fi
fi
if [ "$bases" = debian ]; then
  log "Docker Hub unreachable: base images from Debian packages (scripts/container_bases.sh)"
  nice -n 15 scripts/container_bases.sh >&2
fi
# The editor's browser assets go into both images (the Bento via bentofile.yaml's include).
web/build.sh >&2
# The classic builder: the one that every docker has (Debian's 20.10 ships no buildx), and the
# one that gives RUN steps the host network here (pip needs it to reach PyPI).
export DOCKER_BUILDKIT=0 BENTOML_DO_NOT_TRACK=True
exec .venv/bin/python -m scripts.container_check --bases "$bases" "$@"
