#!/usr/bin/env bash
# Builds the peer proxies the bench harness can compare Furrow with, from source, into a cache
# folder. Optional: the harness runs without them (their targets are then "not measured").
#
#   bench/peers/build.sh predixy                       # clone from GitHub at the pinned commit
#   bench/peers/build.sh predixy --src PATH_OR_URL     # a git repository (bare or not), a URL,
#                                                      # or an unpacked source tree
#   FURROW_PEERS_DIR=/somewhere bench/peers/build.sh predixy
#
# Output: $FURROW_PEERS_DIR/bin/<peer> (default FURROW_PEERS_DIR: ${XDG_CACHE_HOME:-~/.cache}/furrow-bench/peers),
# which is where the harness looks (after --predixy-bin and before $PATH).
# The peer's code is only built here; none of it is copied into Furrow.
set -euo pipefail

peer="${1:-}"
shift || true
src=""
while [ $# -gt 0 ]; do
    case "$1" in
        --src) src="${2:?--src needs a path or URL}"; shift 2 ;;
        *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

cache="${FURROW_PEERS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/furrow-bench/peers}"
jobs="${JOBS:-1}"

case "$peer" in
    predixy)
        # predixy 1.0.5+ (master as of 2023-10, "avoid to use leader's connection for follow request").
        url="https://github.com/joyieldInc/predixy.git"
        commit="ca1630a6b476a226d88054f652489b3b810471cd"
        ;;
    "" | -h | --help)
        sed -n '2,13p' "$0"; exit 0 ;;
    *)
        echo "build.sh: unknown peer '$peer' (known: predixy)" >&2; exit 2 ;;
esac
src="${src:-$url}"

work="$(mktemp -d "${TMPDIR:-/tmp}/furrow-peer-$peer.XXXXXX")"
trap 'rm -rf "$work"' EXIT
tree="$work/src"

if [ -d "$src" ] && [ ! -d "$src/.git" ] && [ ! -f "$src/HEAD" ]; then
    # An unpacked source tree.
    cp -a "$src" "$tree"
    rev="$(cat "$src/.furrow-rev" 2>/dev/null || echo "unpacked:$src")"
else
    git clone --quiet --no-checkout "$src" "$tree"
    # The pinned commit when the source has it, else the source's HEAD.
    if git -C "$tree" cat-file -e "$commit^{commit}" 2>/dev/null; then
        git -C "$tree" checkout --quiet "$commit"
    else
        echo "build.sh: $src has no commit $commit; building its HEAD" >&2
        git -C "$tree" checkout --quiet HEAD
    fi
    rev="$(git -C "$tree" rev-parse HEAD)"
fi

case "$peer" in
    predixy)
        # Multi-threaded build (the default), epoll; the harness runs it with WorkerThreads 1.
        # `-include ctime`: its String.h uses localtime_r/strftime without including <ctime>,
        # which GCC 12's libstdc++ no longer pulls in through <string>.
        nice -n 10 make -C "$tree" -j"$jobs" CXX="${CXX:-g++} -include ctime" \
            >"$work/build.log" 2>&1 || {
            tail -n 30 "$work/build.log" >&2
            echo "build.sh: predixy build failed" >&2
            exit 1
        }
        built="$tree/src/predixy"
        ;;
esac

mkdir -p "$cache/bin"
install -m 0755 "$built" "$cache/bin/$peer.new"
mv -f "$cache/bin/$peer.new" "$cache/bin/$peer"
echo "$rev" >"$cache/$peer.rev"
echo "built $peer $rev -> $cache/bin/$peer"
