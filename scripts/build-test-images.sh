#!/usr/bin/env bash
# Builds the container images the Docker suites use, without a registry:
#   rollcall-test/busybox:1   FROM scratch + Debian's static busybox
# An image that already exists is kept (delete it to rebuild).
set -euo pipefail
IMAGE=rollcall-test/busybox:1
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE exists."
    exit 0
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && apt-get download busybox-static >/dev/null)
dpkg-deb -x "$WORK"/busybox-static_*.deb "$WORK/root"
mkdir "$WORK/ctx"
cp "$WORK/root/bin/busybox" "$WORK/ctx/busybox"
cat > "$WORK/ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "mkdir", "-p", "/tmp", "/usr/bin", "/sbin", "/usr/sbin"]
RUN ["/bin/busybox", "--install", "-s"]
CMD ["/bin/sh"]
DOCKERFILE
docker build --quiet -t "$IMAGE" "$WORK/ctx" >/dev/null
echo "$IMAGE built."
