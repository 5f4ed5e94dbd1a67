#!/usr/bin/env bash
# Reproduce the Dockerfile's cargo (build) stage without Docker.
#
# Usage: scripts/docker-stage-check.sh [CARGO_TARGET_DIR]
#   CARGO_TARGET_DIR defaults to $CARGO_TARGET_DIR, else <staging>/target.
#
# Like the Dockerfile, only Cargo.toml, Cargo.lock, src/, config/, migrations/, tests/ and benches/ are
# copied into a clean staging dir, so a missing file in the Docker build
# context (e.g. a new build.rs) fails here too. Keep env/flags in sync with
# the `build` stage of the Dockerfile.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
stage="${DOCKER_STAGE_DIR:-${TMPDIR:-/tmp}/mavera-triggers-docker-stage}"
target="${1:-${CARGO_TARGET_DIR:-$stage/target}}"

for f in Cargo.toml Cargo.lock src config migrations tests benches; do
  [[ -e "$root/$f" ]] || { echo "missing $f (Dockerfile COPYs it)" >&2; exit 1; }
done

rm -rf "$stage/ctx"
mkdir -p "$stage/ctx" "$target"
target="$(cd "$target" && pwd)"   # absolute: we cd below
cp -a "$root/Cargo.toml" "$root/Cargo.lock" "$root/src" "$root/config" "$root/migrations" "$root/tests" "$root/benches" "$stage/ctx/"

export CARGO_INCREMENTAL=0 CARGO_NET_RETRY=10 CARGO_TERM_COLOR=never
export CARGO_TARGET_DIR="$target"

cd "$stage/ctx"
cargo --version
cargo build --release --locked --bin mavera-triggers

bin="$CARGO_TARGET_DIR/release/mavera-triggers"
test -x "$bin"
echo "ok: $bin"
