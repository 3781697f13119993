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
