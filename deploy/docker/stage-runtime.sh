#!/usr/bin/env bash
# Stages streamkv-server and streamkv-client with every shared library they load into one
# self-contained tree, DEST/bin and DEST/lib, that runs on any glibc/libstdc++ at least as new as
# the build machine's (the Dockerfile copies it onto a slim or CUDA base image and sets
# LD_LIBRARY_PATH=DEST/lib).
#
#   stage-runtime.sh BUILD_DIR DEST [LIBRARY_DIR...]
#
# Not staged: the C runtime (glibc, libstdc++, libgcc_s), which every base image has, and the GPU
# driver (libcuda, libnvidia-*), which the NVIDIA container runtime mounts. Each LIBRARY_DIR is
# copied whole: LibTorch's CUDA build dlopens part of its bundled CUDA libraries, which ldd
# cannot see.
set -euo pipefail

if (($# < 2)); then
  echo "usage: $0 BUILD_DIR DEST [LIBRARY_DIR...]" >&2
  exit 2
fi
build_dir=$1
dest=$2
shift 2

binaries=("$build_dir/server/streamkv-server" "$build_dir/client/streamkv-client")
runtime_libs='^(ld-linux.*|libc|libm|libdl|libpthread|librt|libresolv|libutil|libstdc\+\+|libgcc_s)\.so'
driver_libs='^(libcuda|libnvidia-.*)\.so'

mkdir -p "$dest/bin" "$dest/lib"
for dir in "$@"; do
  cp -a "$dir"/*.so* "$dest/lib/"
done
for binary in "${binaries[@]}"; do
  [ -x "$binary" ] || { echo "stage-runtime: $binary is missing; build it first" >&2; exit 1; }
  cp "$binary" "$dest/bin/"
done

# ldd lists the whole dependency closure as 'name => path (address)' lines.
missing=()
while read -r name arrow path _; do
  [ "$arrow" = "=>" ] || continue
  [[ $name =~ $runtime_libs || $name =~ $driver_libs ]] && continue
  if [ "$path" = "not" ]; then
    missing+=("$name")
  elif [ ! -e "$dest/lib/$name" ]; then
    cp -L "$path" "$dest/lib/$name"
  fi
done < <(ldd "${binaries[@]}" | grep '=>' | sort -u)
if ((${#missing[@]} > 0)); then
  echo "stage-runtime: libraries not found: ${missing[*]}" >&2
  exit 1
fi
echo "stage-runtime: staged ${#binaries[@]} binaries and $(ls "$dest/lib" | wc -l) libraries" \
     "($(du -sh "$dest" | cut -f1)) in $dest"
