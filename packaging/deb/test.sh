#!/usr/bin/env bash
# CI check of the Debian package: builds it from an already built binary (default target/debug/furrow:
# CI never builds the release profile for this), inspects it, extracts it into a scratch root and runs
# the packaged binary from there: `furrow --version` and `furrow check-config` on the packaged example
# config. Verifies the systemd units with `systemd-analyze verify` when systemd-analyze exists (it
# checks the unit syntax and that ExecStart's binary exists, against the scratch root).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
binary=${1:-${CARGO_TARGET_DIR:-$repo/target}/debug/furrow}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
deb=$("$here/build.sh" --binary "$binary" --out "$work" --compress none)
echo "built $deb"
dpkg-deb --info "$deb" | grep -E '^ (Package|Version|Architecture|Depends):'
contents=$(dpkg-deb --contents "$deb")
for f in ./usr/bin/furrow ./etc/furrow/example.toml ./lib/systemd/system/furrow-proxy@.service \
         ./lib/systemd/system/furrow-proxy-b@.service \
         ./lib/systemd/system/furrow-control.service ./lib/systemd/system/furrow-worker.service \
         ./lib/systemd/system/furrow-agent.service ./usr/share/doc/furrow/operations.md; do
  grep -q " $f\$" <<<"$contents" || { echo "missing from the package: $f" >&2; exit 1; }
done
root="$work/root"
dpkg-deb -x "$deb" "$root"
"$root/usr/bin/furrow" --version
"$root/usr/bin/furrow" check-config "$root/etc/furrow/example.toml"
if command -v systemd-analyze >/dev/null; then
  # The units name the installed paths: verify copies whose binary paths point into the scratch root
  # (syntax, directives, that ExecStart is executable). The template is verified as an instance.
  verify="$work/verify"
  mkdir -p "$verify"
  sed "s#/usr/bin/furrow#$root/usr/bin/furrow#g" "$root/lib/systemd/system/furrow-proxy@.service" \
    > "$verify/furrow-proxy@.service"
  sed "s#/usr/bin/furrow#$root/usr/bin/furrow#g" "$root/lib/systemd/system/furrow-control.service" \
    > "$verify/furrow-control.service"
  sed "s#/usr/bin/furrow#$root/usr/bin/furrow#g" "$root/lib/systemd/system/furrow-proxy-b@.service" \
    > "$verify/furrow-proxy-b@main.service"
  sed "s#/usr/bin/furrow#$root/usr/bin/furrow#g" "$root/lib/systemd/system/furrow-worker.service" \
    > "$verify/furrow-worker.service"
  sed "s#/usr/bin/furrow#$root/usr/bin/furrow#g" "$root/lib/systemd/system/furrow-agent.service" \
    > "$verify/furrow-agent.service"
  cp "$verify/furrow-proxy@.service" "$verify/furrow-proxy@main.service"
  out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$verify/furrow-proxy@main.service" \
    "$verify/furrow-proxy-b@main.service" "$verify/furrow-control.service" "$verify/furrow-worker.service" \
    "$verify/furrow-agent.service" 2>&1) || true
  # Only findings about our units count (the host's own units may warn about themselves).
  if grep -E 'furrow-(proxy@main|proxy-b@main|control|worker|agent)\.service' <<<"$out"; then
    echo "systemd-analyze verify found problems in the units" >&2
    exit 1
  fi
  echo "systemd-analyze verify: units ok"
else
  echo "systemd-analyze not found: unit verification skipped"
fi
# The Kubernetes example: its proxy config must pass check-config, and the manifests must render.
awk '/furrow.toml: \|/{on=1; next} on && /^---/{exit} on {sub(/^    /, ""); print}' \
  "$repo/packaging/k8s/proxy.yaml" > "$work/k8s-proxy.toml"
"$root/usr/bin/furrow" check-config "$work/k8s-proxy.toml"
if command -v kubectl >/dev/null; then
  kubectl kustomize "$repo/packaging/k8s" > "$work/k8s.yaml"
  echo "kubectl kustomize: $(grep -c '^kind:' "$work/k8s.yaml") objects"
fi
echo "package check ok"
