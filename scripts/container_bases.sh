#!/usr/bin/env bash
# Stand-ins for the Docker Hub base images, built from Debian 12 packages, for a host that
# cannot reach Docker Hub (but reaches deb.debian.org). Anywhere Docker Hub answers, skip this:
# the builds pull the real upstream images.
#
#   scripts/container_bases.sh            # every tag below that the host lacks
#   scripts/container_bases.sh --force    # rebuild them all
#
# Each is `mmdebstrap --variant=minbase bookworm` + a few packages, then `docker import` under
# the upstream tag, so that docker/Dockerfile, `bentoml containerize` and
# docker/docker-compose.yml use them unchanged. The versions are Debian's, not the tag's
# (python 3.11, node 18, redis 7.0, nginx 1.22, prometheus 2.42). The host's CA bundle goes in
# as well (pip, uv and npm behind a TLS-inspecting proxy need it); there is no Grafana: Debian
# does not package it. Needs root, mmdebstrap and docker (apt-get install mmdebstrap docker.io).
set -euo pipefail

force=0
[ "${1:-}" = --force ] && force=1
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
HOST_CA="${HOST_CA:-/etc/ssl/certs/ca-certificates.crt}"
work="$(mktemp -d "${TMPDIR:-/tmp}/bases.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Where the host bundle lives in the images: outside /etc/ssl/certs, which
# update-ca-certificates rewrites whenever a build installs ca-certificates.
CA=/usr/local/share/host-ca/ca-certificates.crt
CA_ENV=(--change "ENV SSL_CERT_FILE=$CA" --change "ENV PIP_CERT=$CA"
  --change "ENV REQUESTS_CA_BUNDLE=$CA" --change "ENV NODE_EXTRA_CA_CERTS=$CA"
  --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  --change "ENV LANG=C.UTF-8")

EXTRA_HOOKS=()
have() { [ "$force" = 0 ] && docker image inspect "$1" >/dev/null 2>&1; }

# build NAME "PACKAGES" SETUP-COMMAND TAG... -- DOCKER-IMPORT-CHANGES...
build() {
  local name="$1" packages="$2" setup="$3"
  shift 3
  local tags=() changes=()
  while [ "$#" -gt 0 ] && [ "$1" != -- ]; do tags+=("$1"); shift; done
  [ "$#" -gt 0 ] && shift
  changes=("$@")
  local missing=0 tag
  for tag in "${tags[@]}"; do have "$tag" || missing=1; done
  if [ "$missing" = 0 ]; then
    echo "bases: ${tags[*]} present"
    return
  fi
  echo "bases: $name <- bookworm minbase + $packages"
  local tar="$work/$name.tar"
  mmdebstrap --variant=minbase --include="$packages" "${EXTRA_HOOKS[@]}" \
    --customize-hook="mkdir -p \"\$1/$(dirname "$CA")\" && cp '$HOST_CA' \"\$1$CA\"" \
    --customize-hook="chroot \"\$1\" sh -c '$setup'" \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$tar" "$MIRROR"
  docker import "${CA_ENV[@]}" "${changes[@]}" "$tar" "${tags[0]}"
  for tag in "${tags[@]:1}"; do docker tag "${tags[0]}" "$tag"; done
  rm -f "$tar"
}

# python:3.11-slim(-bookworm): `python` and `pip` on PATH as in the upstream image, and a
# system pip that may install (uv, for `bentoml containerize`) like the upstream one.
build python "python3,python3-venv,python3-pip,python-is-python3,ca-certificates" \
  "rm -f /usr/lib/python3*/EXTERNALLY-MANAGED && ln -sf pip3 /usr/bin/pip" \
  python:3.11-slim-bookworm python:3.11-slim -- --change 'CMD ["python3"]'

# node:20-bookworm-slim (Debian ships Node 18; web/build.sh needs >= 18).
build node "nodejs,npm,ca-certificates" "true" node:20-bookworm-slim -- --change 'CMD ["node"]'

# As upstream's entry point: a bare `redis-server ARGS` (compose's command) runs with
# protected mode off, else Redis refuses every client from another container.
cat >"$work/redis-entrypoint" <<'EOF'
#!/bin/sh
if [ "$1" = redis-server ] && ! printf '%s\n' "$@" | grep -q -- '--protected-mode'; then
  set -- "$@" --protected-mode no
fi
exec "$@"
EOF
chmod 755 "$work/redis-entrypoint"
EXTRA_HOOKS=(--customize-hook="upload $work/redis-entrypoint /usr/local/bin/docker-entrypoint.sh")
build redis "redis-server,redis-tools" "chmod 755 /usr/local/bin/docker-entrypoint.sh" redis:7-alpine -- \
  --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
  --change 'CMD ["redis-server"]' --change 'EXPOSE 6379'
EXTRA_HOOKS=()

# conf.d/*.conf is included by Debian's nginx.conf as by the upstream image; the default site
# goes, and the logs go to the container's output.
build nginx "nginx,wget" \
  "rm -f /etc/nginx/sites-enabled/default && ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log" \
  nginx:1.27-alpine -- --change 'CMD ["nginx", "-g", "daemon off;"]' --change 'EXPOSE 80'

# As upstream: the binary is the entry point, data under /prometheus, run as nobody.
build prometheus "prometheus" "mkdir -p /prometheus && chown nobody:nogroup /prometheus" \
  prom/prometheus:v2.55.1 -- --change 'ENTRYPOINT ["/usr/bin/prometheus"]' \
  --change 'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]' \
  --change 'WORKDIR /prometheus' --change 'USER nobody' --change 'EXPOSE 9090'

docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' |
  grep -E '^(python|node|redis|nginx|prom/prometheus):' || true
