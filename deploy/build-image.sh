#!/usr/bin/env bash
# Builds deeb's container image offline with buildah: FROM scratch, the
# `deeb` binary only. Prefers a static musl build (needs the Rust target
# x86_64-unknown-linux-musl and musl-gcc from Debian's musl-tools); falls
# back to the glibc build with exactly the shared libraries `ldd` lists.
# Then runs `deeb --version` inside the image and prints the image size.
#
#   deploy/build-image.sh [IMAGE]          (default deeb:dev)
#
# Needs root (or rootless buildah set up), buildah (Debian package; installed
# here if missing) and the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-deeb:dev}
storage=(--storage-driver vfs)

if ! command -v buildah >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq buildah >/dev/null
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/rootfs/usr/bin" "$context/rootfs/var/lib/deeb" "$context/rootfs/tmp"

musl=x86_64-unknown-linux-musl
if rustup target list --installed 2>/dev/null | grep -qx "$musl" && command -v musl-gcc >/dev/null; then
    echo "== static build ($musl)"
    CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --locked -p deeb-server --target "$musl"
    binary=target/$musl/release/deeb
    cp "$binary" "$context/rootfs/usr/bin/deeb"
else
    echo "== glibc build (no $musl target or no musl-gcc): copying the shared libraries it needs"
    cargo build --release --locked -p deeb-server
    binary=target/release/deeb
    cp "$binary" "$context/rootfs/usr/bin/deeb"
    # Every library ldd resolves, and the loader, at the same paths.
    ldd "$binary" | grep -o '/[^ ]*' | sort -u | while read -r library; do
        mkdir -p "$context/rootfs$(dirname "$library")"
        cp -L "$library" "$context/rootfs$library"
    done
fi
strip "$context/rootfs/usr/bin/deeb" 2>/dev/null || true
# The data directory belongs to the image's user; /tmp for SQLite's temp files.
chown -R 65532:65532 "$context/rootfs/var/lib/deeb"
chmod 1777 "$context/rootfs/tmp"
cp deploy/Dockerfile "$context/Dockerfile"

echo "== buildah build $image"
# Docker format keeps HEALTHCHECK (the OCI format has no such field).
buildah "${storage[@]}" build --isolation chroot --format docker --pull=never -t "$image" "$context"

echo "== deeb --version inside the image"
container=$(buildah "${storage[@]}" from "$image")
buildah "${storage[@]}" run --isolation chroot --user 65532:65532 "$container" -- /usr/bin/deeb --version
echo "== user inside the image: $(buildah "${storage[@]}" inspect --format '{{.OCIv1.Config.User}}' "$container")"
echo "== a one-node deeb serving inside the image, and its HEALTHCHECK command"
run=(buildah "${storage[@]}" run --isolation chroot --network host --user 65532:65532 "$container" --)
"${run[@]}" /usr/bin/deeb serve --id 1 --data-dir /tmp/node --listen 127.0.0.1:27811 --http-listen 127.0.0.1:27812 --peer-listen 127.0.0.1:27813 \
    --peers 1=127.0.0.1:27811 >"$context/serve.log" 2>&1 &
serve=$!
healthy=false
for _ in $(seq 1 50); do
    if "${run[@]}" /usr/bin/deeb health --http 127.0.0.1:27812 --path /readyz >/dev/null 2>&1; then
        healthy=true
        "${run[@]}" /usr/bin/deeb health --http 127.0.0.1:27812 --path /readyz
        break
    fi
    sleep 0.2
done
kill -TERM "$serve" 2>/dev/null || true
wait "$serve" 2>/dev/null || true
buildah "${storage[@]}" rm "$container" >/dev/null
if [[ $healthy != true ]]; then
    cat "$context/serve.log" >&2
    echo "deeb did not become ready inside the image" >&2
    exit 1
fi
buildah "${storage[@]}" images "$image"
echo "== image $image: $(buildah "${storage[@]}" images --format '{{.Size}}' "$image")"
