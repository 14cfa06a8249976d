#!/usr/bin/env bash
# DALI's wheel (about 190 MiB) onto the lent GPU machine, whose calls carry 64 MiB each (benchmarks/README.md,
# "The GPU check"): split here into parts, carried one per call while the machine stays warm, put back
# together and installed there.
#
#   bash benchmarks/gpu_dali.sh split      # here: pip download the wheel (+ the small wheels it imports),
#                                          #   split it into .dali_parts/partNN (< 60 MiB each), write MANIFEST
#   bash benchmarks/gpu_dali.sh receive    # there, once per call: keep the carried part(s) in $DALI_STORE;
#                                          #   once every part is there, assemble and install
#   bash benchmarks/gpu_dali.sh assemble   # there: check every part, join them, check the wheel, install it
#   bash benchmarks/gpu_dali.sh status     # there: which parts are kept
#
# MANIFEST lines: "<kind> <file> <bytes> <sha256>", kind wheel | part | dep. Every part is checked against
# it when it arrives and again before joining; a part that differs is refused (exit 2) and must be carried
# again. Exit status: 0 done (or waiting for more parts), 1 usage or tool failure, 2 a file does not match.
#
# Environment: DALI_PACKAGE (nvidia-dali-cuda130, the repo's `dali` extra: CUDA 13, as the machine's driver
# 580 and torch cu130), DALI_VERSION (2.4.0), DALI_DEPS (the wheels `import nvidia.dali` needs that the
# machine lacks; "" for none), DALI_WHEEL (split this file instead of downloading), DALI_PART_MIB (58: the
# most per part), DALI_PART_BYTES (overrides it), DALI_PARTS_DIR (.dali_parts), DALI_STORE
# (/tmp/stdd_dali_parts), STDD_SITE (/tmp/stdd_site, where gpu_check.sh installs), PYTHON (python3),
# DALI_CHECK_IMPORT (nvidia.dali: what must import after the install).
set -uo pipefail
cd "$(dirname "$0")/.."

mode=${1:-}
package=${DALI_PACKAGE:-nvidia-dali-cuda130}
version=${DALI_VERSION:-2.4.0}
deps=${DALI_DEPS-optree==0.20.0 gast==0.7.0 astunparse==1.6.3}
parts=${DALI_PARTS_DIR:-$PWD/.dali_parts}
store=${DALI_STORE:-/tmp/stdd_dali_parts}
site=${STDD_SITE:-/tmp/stdd_site}
python=${PYTHON:-python3}
check_import=${DALI_CHECK_IMPORT:-nvidia.dali}
mib=$((1024 * 1024))

die() { echo "gpu_dali.sh: $1" >&2; exit "${2:-1}"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
# manifest rows of one kind: "file bytes sha256"
rows() { awk -v k="$1" '$1 == k { print $2, $3, $4 }' "$2"; }

# the machine's Python (3.12, x86-64 manylinux), whatever runs here
download() {
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$@"
}

split_wheel() {
    mkdir -p "$parts"
    local wheel=${DALI_WHEEL:-}
    if [ -z "$wheel" ]; then
        echo "downloading $package==$version (cp312, manylinux x86_64) into $parts/download"
        rm -rf "$parts/download" && mkdir -p "$parts/download"
        download "$parts/download" "$package==$version" || die "pip could not download $package==$version"
        wheel=$(ls "$parts"/download/*.whl 2>/dev/null | head -1)
        [ -n "$wheel" ] || die "pip downloaded no wheel for $package==$version"
    fi
    [ -f "$wheel" ] || die "no such wheel: $wheel"
    rm -rf "$parts"/part?? "$parts/deps" "$parts/MANIFEST"
    if [ -n "$deps" ]; then
        mkdir -p "$parts/deps"
        # shellcheck disable=SC2086  # one word per requirement
        download "$parts/deps" $deps || die "pip could not download the dependencies: $deps"
    fi
    local bytes most count chunk
    bytes=$(size "$wheel")
    most=${DALI_PART_BYTES:-$(( ${DALI_PART_MIB:-58} * mib ))}
    count=$(( (bytes + most - 1) / most ))
    chunk=$(( (bytes + count - 1) / count ))  # equal parts, each at most $most bytes
    split -b "$chunk" -d -a 2 --numeric-suffixes=1 "$wheel" "$parts/part" || die "split failed"
    {
        echo "wheel $(basename "$wheel") $bytes $(sha "$wheel")"
        for p in "$parts"/part??; do echo "part $(basename "$p") $(size "$p") $(sha "$p")"; done
        for d in "$parts"/deps/*.whl; do [ -f "$d" ] && echo "dep $(basename "$d") $(size "$d") $(sha "$d")"; done
    } > "$parts/MANIFEST"
    echo "$(basename "$wheel"): $bytes bytes ($((bytes / mib)) MiB) in $count parts of at most $chunk bytes:"
    awk -v m="$mib" '{ printf "  %-5s %-70s %11d bytes %7.2f MiB  %s\n", $1, $2, $3, $3 / m, $4 }' "$parts/MANIFEST"
    echo "each call carries one part with MANIFEST and deps/ ($(du -cb "$parts/MANIFEST" "$parts"/deps 2>/dev/null | tail -1 | cut -f1) bytes)"
}

# the stored parts: "present" and "missing" lists against the stored manifest
survey() {
    present=() missing=()
    while read -r file _bytes _sha; do
        if [ -f "$store/$file" ]; then present+=("$file"); else missing+=("$file"); fi
    done < <(rows part "$store/MANIFEST")
}

receive() {
    [ -f "$parts/MANIFEST" ] || die "no $parts/MANIFEST: carry .dali_parts/MANIFEST with each part (run 'split' here first)"
    mkdir -p "$store"
    if [ -f "$store/MANIFEST" ] && ! cmp -s "$parts/MANIFEST" "$store/MANIFEST"; then
        echo "the carried MANIFEST is another wheel's than the parts kept in $store: starting again"
        rm -rf "${store:?}"/*
    fi
    cp "$parts/MANIFEST" "$store/MANIFEST"
    local got=0 file bytes want have
    while read -r file bytes want; do
        [ -f "$parts/$file" ] || continue
        [ -f "$store/$file" ] && [ "$(sha "$store/$file")" = "$want" ] && continue  # kept by an earlier call
        have=$(sha "$parts/$file")
        if [ "$have" != "$want" ] || [ "$(size "$parts/$file")" != "$bytes" ]; then
            die "$file: sha256 $have ($(size "$parts/$file") bytes) does not match the MANIFEST's $want ($bytes bytes): refused, carry it again" 2
        fi
        cp "$parts/$file" "$store/$file.tmp" && mv "$store/$file.tmp" "$store/$file"
        echo "kept $file ($bytes bytes, sha256 checked) in $store"
        got=$((got + 1))
    done < <(rows part "$parts/MANIFEST")
    while read -r file bytes want; do
        [ -f "$parts/deps/$file" ] || continue
        [ "$(sha "$parts/deps/$file")" = "$want" ] || die "deps/$file: sha256 does not match the MANIFEST: refused, carry it again" 2
        mkdir -p "$store/deps" && cp "$parts/deps/$file" "$store/deps/$file"
    done < <(rows dep "$parts/MANIFEST")
    [ "$got" -gt 0 ] || echo "no new part was carried in $parts (carry .dali_parts/partNN)"
    survey
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "have ${#present[@]} of $(( ${#present[@]} + ${#missing[@]} )) parts (${present[*]:-none}); next: carry ${missing[0]}"
        if [ "${#present[@]}" -le "$got" ] && [ "${missing[0]}" = "$(rows part "$store/MANIFEST" | head -1 | cut -d' ' -f1)" ]; then
            echo "note: no part from an earlier call is here: a fresh machine (the warm one was given back); start again from part01"
        fi
        return 0
    fi
    assemble
}

assemble() {
    [ -f "$store/MANIFEST" ] || die "no $store/MANIFEST: 'receive' the parts first"
    survey
    [ "${#missing[@]}" -eq 0 ] || die "missing ${missing[*]} in $store: receive them first"
    local file bytes want wheel
    while read -r file bytes want; do
        [ "$(sha "$store/$file")" = "$want" ] || die "$store/$file: sha256 no longer matches the MANIFEST: refused, carry it again" 2
    done < <(rows part "$store/MANIFEST")
    read -r wheel bytes want < <(rows wheel "$store/MANIFEST")
    tmp=$(mktemp -d)  # global: the EXIT trap removes it, also after a failure
    trap 'rm -rf "$tmp"' EXIT
    while read -r file _b _s; do cat "$store/$file"; done < <(rows part "$store/MANIFEST") > "$tmp/$wheel"
    [ "$(sha "$tmp/$wheel")" = "$want" ] || die "the joined $wheel does not match the MANIFEST's sha256: refused" 2
    echo "joined $wheel ($bytes bytes, sha256 checked); installing into $site"
    local extra=()
    while read -r file bytes want; do
        [ -f "$store/deps/$file" ] || die "deps/$file is not here: carry .dali_parts/deps with a part"
        extra+=("$store/deps/$file")
    done < <(rows dep "$store/MANIFEST")
    mkdir -p "$site"
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "$tmp/$wheel" "${extra[@]}" || die "pip could not install $wheel"
    PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" "$python" -c \
        "import importlib, sys; m = importlib.import_module('$check_import'); print('imported', m.__name__, getattr(m, '__version__', ''), 'from', m.__file__)" \
        || die "installed, but $check_import does not import from $site"
}

status() {
    [ -f "$store/MANIFEST" ] || { echo "no parts kept in $store"; return 0; }
    survey
    echo "kept: ${present[*]:-none}; missing: ${missing[*]:-none}"
}

case "$mode" in
    split) split_wheel ;;
    receive) receive ;;
    assemble) assemble ;;
    status) status ;;
    *) die "usage: bash benchmarks/gpu_dali.sh split|receive|assemble|status (see the comments at its top)" ;;
esac
