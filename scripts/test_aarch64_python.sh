#!/usr/bin/env bash
# The pytest suite against an aarch64 build of the wheel (the release workflow's Linux
# aarch64 wheel), run here on x86-64 under qemu-user. Slow: everything, NumPy included, is
# emulated. scripts/test_aarch64.sh does the same for the Rust tests.
#
# Needs (Debian/Ubuntu):  apt-get install qemu-user gcc-aarch64-linux-gnu
#                         rustup target add aarch64-unknown-linux-gnu
#                         .venv with maturin and pip (see the README, "Development")
# binfmt_misc is not needed. Steps, all under target/aarch64-python/ ($WORK):
#   1. sysroot/: Debian's arm64 CPython 3.11 and the libraries it needs, fetched by apt-get
#      with a private state directory (the machine's dpkg and apt lists are left alone;
#      this machine's apt sources and keyring check the packages) and unpacked with dpkg-deb.
#   2. wheel/: `maturin build --release --target aarch64-unknown-linux-gnu`, linked by
#      aarch64-linux-gnu-gcc.
#   3. venv/: a virtual environment for that interpreter. bin/python is a shell script that
#      starts it under `qemu-aarch64 -L sysroot`, so the tests' subprocesses
#      (`sys.executable -m tinylm ...`) are emulated too; site-packages gets the test
#      dependencies' manylinux aarch64 wheels (host pip with --platform) and the wheel.
#   4. pytest under emulation, from the checkout's tests/; `tinylm` is the installed wheel.
# Steps 1 and 3's dependencies are kept between runs (delete $WORK to start afresh); the
# wheel is rebuilt and reinstalled every run. Extra arguments go to pytest (e.g. a file, -k).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${WORK:-$REPO/target/aarch64-python}
HOST_VENV=${HOST_VENV:-$REPO/.venv}
TARGET=aarch64-unknown-linux-gnu

missing=()
command -v qemu-aarch64 >/dev/null || missing+=("qemu-aarch64 (apt-get install qemu-user)")
command -v aarch64-linux-gnu-gcc >/dev/null \
    || missing+=("aarch64-linux-gnu-gcc (apt-get install gcc-aarch64-linux-gnu)")
rustup target list --installed 2>/dev/null | grep -qx "$TARGET" \
    || missing+=("the Rust target (rustup target add $TARGET)")
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
    || missing+=("apt-get and dpkg-deb (a Debian or Ubuntu machine)")
hint="python3 -m venv .venv && .venv/bin/pip install maturin"
[[ -x $HOST_VENV/bin/maturin && -x $HOST_VENV/bin/pip ]] \
    || missing+=("maturin and pip in $HOST_VENV ($hint)")
if ((${#missing[@]})); then
    printf 'test_aarch64_python.sh: missing %s\n' "${missing[@]}" >&2
    exit 2
fi
mkdir -p "$WORK"

# 1. The arm64 interpreter. The state directory pretends nothing is installed, so apt
# resolves the whole dependency closure for arm64 and only downloads it. libstdc++ is one
# of the system libraries manylinux wheels may use (NumPy's and onnxruntime's do).
SYSROOT=$WORK/sysroot
if [[ ! -x $SYSROOT/usr/bin/python3.11 ]]; then
    echo "== arm64 CPython 3.11 from Debian into $SYSROOT"
    apt_state=$WORK/apt
    rm -rf "$apt_state" "$SYSROOT"
    mkdir -p "$apt_state/lists/partial" "$apt_state/cache/archives/partial"
    : >"$apt_state/status"
    apt_opts=(
        -o APT::Architecture=arm64 -o APT::Architectures::=arm64
        -o Dir::State::Lists="$apt_state/lists" -o Dir::State::status="$apt_state/status"
        -o Dir::Cache="$apt_state/cache" -o Debug::NoLocking=1
    )
    apt-get "${apt_opts[@]}" -q update
    apt-get "${apt_opts[@]}" -q -y --download-only --no-install-recommends \
        install python3.11 libstdc++6
    mkdir -p "$SYSROOT"
    for deb in "$apt_state"/cache/archives/*.deb; do
        dpkg-deb -x "$deb" "$SYSROOT"
    done
    # qemu's -L prefix also applies to execve: an arm64 tar or dpkg there would shadow the
    # host's. Keep only the interpreter.
    rm -rf "${SYSROOT:?}/bin" "$SYSROOT/sbin" "$SYSROOT/usr/sbin"
    find "$SYSROOT/usr/bin" -mindepth 1 ! -name python3.11 -delete
fi
# The same prefix applies to /proc/cpuinfo, which qemu 7 passes through from the host: an
# x86 one makes onnxruntime's CPU detection (pytorch/cpuinfo) crash with a segmentation
# fault on import. An ARM Neoverse-N1's, one entry per CPU of this machine, lets it load.
mkdir -p "$SYSROOT/proc"
features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc"
for ((cpu = 0; cpu < $(getconf _NPROCESSORS_CONF); cpu++)); do
    printf '%s\t: %s\n' processor "$cpu" BogoMIPS 50.00 \
        Features "$features dcpop asimddp" 'CPU implementer' 0x41 'CPU architecture' 8 \
        'CPU variant' 0x3 'CPU part' 0xd0c 'CPU revision' 1
    echo
done >"$SYSROOT/proc/cpuinfo"

# 2. The wheel.
echo "== maturin build --target $TARGET"
rm -rf "$WORK/wheel"
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    "$HOST_VENV/bin/maturin" build --release --target "$TARGET" --out "$WORK/wheel"
wheels=("$WORK"/wheel/tinylm-*aarch64*.whl)
if [[ ! -f ${wheels[0]} ]]; then
    echo "test_aarch64_python.sh: no aarch64 wheel in $WORK/wheel" >&2
    exit 1
fi

# 3. The virtual environment. pip --platform takes exact tags (it does not widen
# manylinux_2_36 to older glibcs), so list every tag glibc 2.36 can load.
VENV=$WORK/venv
SITE=$VENV/lib/python3.11/site-packages
mkdir -p "$VENV/bin" "$SITE"
printf 'home = %s\ninclude-system-site-packages = false\nversion = 3.11\n' \
    "$SYSROOT/usr/bin" >"$VENV/pyvenv.cfg"
cat >"$VENV/bin/python3" <<EOF
#!/bin/sh
# CPython for aarch64 under qemu-user; argv[0] stays this script, so sys.executable is too.
exec qemu-aarch64 -L "$SYSROOT" -0 "\$0" "$SYSROOT/usr/bin/python3.11" "\$@"
EOF
chmod +x "$VENV/bin/python3"
ln -sf python3 "$VENV/bin/python"
platforms=(--platform linux_aarch64 --platform manylinux2014_aarch64)
for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_aarch64"); done
pip_opts=(--target "$SITE" "${platforms[@]}" --python-version 3.11 --implementation cp
    --only-binary=:all:)
# The test extra of pyproject.toml, read by the host's Python.
mapfile -t test_deps < <("$HOST_VENV/bin/python" -c '
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["test"]))')
stamp=$SITE/.test-deps
if [[ ! -f $stamp || "$(cat "$stamp")" != "${test_deps[*]}" ]]; then
    echo "== the test dependencies' aarch64 wheels into $SITE"
    "$HOST_VENV/bin/pip" install -q --upgrade "${pip_opts[@]}" "${test_deps[@]}"
    echo "${test_deps[*]}" >"$stamp"
fi
echo "== ${wheels[0]##*/} into $SITE"
"$HOST_VENV/bin/pip" install -q --upgrade --no-deps "${pip_opts[@]}" "${wheels[0]}"
# pip --target leaves console scripts in $SITE/bin with the host Python's shebang.
sed "1s|.*|#!$VENV/bin/python3|" "$SITE/bin/tinylm" >"$VENV/bin/tinylm"
chmod +x "$VENV/bin/tinylm"

# 4. The suite. -P keeps the checkout's directory off sys.path: tinylm is the wheel's.
# Temporary files (pytest's tmp_path, where the CLI tests run) stay under $WORK too.
echo "== pytest under qemu-aarch64"
export TMPDIR=$WORK/tmp
rm -rf "$TMPDIR"
mkdir -p "$TMPDIR"
"$VENV/bin/python" -P -c '
import platform, tinylm, tinylm._core as core
assert platform.machine() == "aarch64", platform.machine()
print("tinylm", tinylm.__version__, "from", core.__file__)'
exec "$VENV/bin/python" -P -m pytest -p no:cacheprovider "$@"
