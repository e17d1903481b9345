#!/usr/bin/env bash
# Builds the Debian package of Furrow from an already built binary, with dpkg-deb only (no cargo-deb,
# no debhelper): a staged tree, a generated DEBIAN/control, `dpkg-deb --root-owner-group --build`.
#
#   packaging/deb/build.sh [--binary target/release/furrow] [--out dist] [--compress xz|gzip|none] [--strip]
#
# Contents: /usr/bin/furrow; /etc/furrow/example.toml (the documented example config, a conffile);
# systemd units furrow-proxy@.service (one proxy per /etc/furrow/NAME.toml), its upgrade slot
# furrow-proxy-b@.service, furrow-control.service, furrow-worker.service and furrow-agent.service;
# /usr/share/doc/furrow (operations guide). postinst creates the `furrow` system user and
# /var/lib/furrow, /var/log/furrow; no service is enabled or started by the package.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
binary="$repo/target/release/furrow"
out="$repo/dist"
compress=xz
strip=0
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --compress) compress=$2; shift 2 ;;
    --strip) strip=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x "$binary" ] || { echo "no executable at $binary (build it first: cargo build --release)" >&2; exit 1; }
version=$("$binary" --version | awk '{print $2}')
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/furrow_${version}_${arch}"

install -D -m 0755 "$binary" "$root/usr/bin/furrow"
if [ "$strip" = 1 ]; then strip --strip-debug "$root/usr/bin/furrow"; fi
install -D -m 0644 "$repo/examples/furrow.toml" "$root/etc/furrow/example.toml"
install -D -m 0644 "$repo/packaging/systemd/furrow-proxy@.service" "$root/lib/systemd/system/furrow-proxy@.service"
# The upgrade slot: the same unit under a second name, so that an upgraded process started by systemd
# belongs to a unit of its own (docs/operations.md, "Upgrade under systemd").
sed -e 's/^Description=Furrow proxy (%i)$/Description=Furrow proxy (%i, upgrade slot b)/' \
  "$repo/packaging/systemd/furrow-proxy@.service" > "$stage/furrow-proxy-b@.service"
install -D -m 0644 "$stage/furrow-proxy-b@.service" "$root/lib/systemd/system/furrow-proxy-b@.service"
install -D -m 0644 "$repo/packaging/systemd/furrow-control.service" "$root/lib/systemd/system/furrow-control.service"
install -D -m 0644 "$repo/packaging/systemd/furrow-worker.service" "$root/lib/systemd/system/furrow-worker.service"
install -D -m 0644 "$repo/packaging/systemd/furrow-agent.service" "$root/lib/systemd/system/furrow-agent.service"
install -D -m 0644 "$repo/docs/operations.md" "$root/usr/share/doc/furrow/operations.md"
install -D -m 0644 "$repo/docs/config.md" "$root/usr/share/doc/furrow/config.md"

install -d "$root/DEBIAN"
install -m 0755 "$here/postinst" "$here/postrm" "$root/DEBIAN/"
echo "/etc/furrow/example.toml" > "$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: furrow
Version: $version
Architecture: $arch
Maintainer: Furrow maintainers <furrow@example.invalid>
Installed-Size: $size
Depends: libc6, adduser | passwd
Section: net
Priority: optional
Homepage: https://example.invalid/furrow
Description: thread-per-core MySQL and Redis proxies with a configuration center
 One binary, several roles: "furrow proxy" (MySQL and Redis proxies with sharding,
 read/write splitting, health probes and zero-downtime upgrades) and "furrow control"
 (the configuration center).
CONTROL

mkdir -p "$out"
deb="$out/furrow_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Z"$compress" --build "$root" "$deb" >/dev/null
echo "$deb"
