#!/usr/bin/env bash
# CUDA check of the native engine on an accelerator machine: PyTorch with CUDA (pip torch: its
# libtorch + CMake config), cmake, g++ - and no Node. Builds ONLY the plain C++ driver
# (native/engine.cc + native/bench.cc, no N-API) against that libtorch, runs it on the GPU for
# fp32 and bf16 at b1/b8/b32, compares the logits with a CPU run of the same driver (and with
# Python torch on the GPU), and prints ms/batch medians. Results -> "$OUT/cuda-check.txt" if $OUT.
#
#   bash scripts/device/cuda-check.sh                  # on the GPU machine
#   DEVICE=cpu bash scripts/device/cuda-check.sh       # proves the build + driver on a CPU box
# Env: DEVICE (cuda|cuda:N|cpu), MODEL (models/densenet121.pt), PYTHON (python3), LIBTORCH or
#      TORCH_PREFIX (a CMake prefix; default torch.utils.cmake_prefix_path), BATCHES, ITERS,
#      THREADS (CPU reference threads), FORCE_GXX=1 (skip CMake, build with g++ directly).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEVICE="${DEVICE:-cuda}"
MODEL="${MODEL:-$ROOT/models/densenet121.pt}"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/densenet-cuda-check.XXXXXX")"
REPORT="$WORK/cuda-check.txt"
if [[ "$DEVICE" == cpu ]]; then BATCHES="${BATCHES:-1,8}"; ITERS="${ITERS:-3}"; else BATCHES="${BATCHES:-1,8,32}"; ITERS="${ITERS:-30}"; fi
THREADS="${THREADS:-$(nproc)}"
START=$(date +%s)

log() { printf '%s\n' "$*" | tee -a "$REPORT"; }
die() {
  log "CUDA CHECK FAILED: $*"
  finish 1
}
finish() {
  local rc="$1"
  log "elapsed: $(( $(date +%s) - START )) s"
  if [[ -n "${OUT:-}" ]]; then mkdir -p "$OUT" && cp "$REPORT" "$OUT/cuda-check.txt" && echo "results: $OUT/cuda-check.txt"; fi
  exit "$rc"
}
trap 'rc=$?; if (( rc != 0 )); then log "CUDA CHECK FAILED: command failed (exit $rc) at line $LINENO"; [[ -n "${OUT:-}" ]] && mkdir -p "$OUT" && cp "$REPORT" "$OUT/cuda-check.txt"; fi' EXIT

log "== densenet-serve CUDA check ($(date -u +%FT%TZ)) device=$DEVICE model=$MODEL"
[[ -f "$MODEL" ]] || die "model file $MODEL not found (copy models/densenet121.pt there, or set MODEL=)"
command -v cmake >/dev/null || [[ "${FORCE_GXX:-0}" == 1 ]] || die "cmake not found"
command -v g++ >/dev/null || die "g++ not found"
"$PY" -c 'import torch' 2>/dev/null || die "no torch in $PY (set PYTHON=)"

# --- what the machine has -------------------------------------------------------------------
"$PY" - "$DEVICE" <<'PYEOF' | tee -a "$REPORT"
import sys, torch
dev = sys.argv[1]
print(f"python torch {torch.__version__}, CUDA build {torch.version.cuda}, cuda available {torch.cuda.is_available()}, "
      f"cxx11 abi {torch._C._GLIBCXX_USE_CXX11_ABI}")
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"gpu {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}, "
              f"bf16 supported {torch.cuda.is_bf16_supported()}")
if dev.startswith("cuda") and not torch.cuda.is_available():
    sys.exit("CUDA requested but torch.cuda.is_available() is False")
PYEOF
[[ "${PIPESTATUS[0]}" == 0 ]] || die "python torch check failed"

# --- build the plain driver ----------------------------------------------------------------
TORCH_DIR="$("$PY" -c 'import torch, os; print(os.path.dirname(torch.__file__))')"
PREFIX="${LIBTORCH:-${TORCH_PREFIX:-$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')}}"
BIN="$WORK/build/Release/densenet_bench"
built=""
if [[ "${FORCE_GXX:-0}" != 1 ]]; then
  log "-- building with CMake (DENSENET_BENCH_ONLY=ON, CMAKE_PREFIX_PATH=$PREFIX)"
  if cmake -S "$ROOT" -B "$WORK/build" -DDENSENET_BENCH_ONLY=ON -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_PREFIX_PATH="$PREFIX" >"$WORK/cmake.log" 2>&1 &&
     cmake --build "$WORK/build" --target densenet_bench -j "$(nproc)" >>"$WORK/cmake.log" 2>&1; then
    built=cmake
    grep -E "densenet: " "$WORK/cmake.log" | tee -a "$REPORT" || true
  else
    log "!! CMake build failed (last lines below); falling back to g++ directly"
    tail -n 25 "$WORK/cmake.log" | tee -a "$REPORT"
  fi
fi
if [[ -z "$built" ]]; then
  # pip torch's CMake config may insist on a CUDA toolkit; the driver only needs headers + libs.
  ABI="$("$PY" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')"
  LIBDIR="$TORCH_DIR/lib"
  INC=(-I"$TORCH_DIR/include" -I"$TORCH_DIR/include/torch/csrc/api/include")
  if [[ ! -f "$TORCH_DIR/include/torch/script.h" ]]; then  # Debian splits headers from the module
    INC=(-I/usr/include -I/usr/include/torch/csrc/api/include); LIBDIR=/usr/lib/x86_64-linux-gnu
  fi
  CUDA_LIBS=()
  [[ -e "$LIBDIR/libtorch_cuda.so" ]] && CUDA_LIBS=(-Wl,--no-as-needed -ltorch_cuda -lc10_cuda -Wl,--as-needed)
  log "-- building with g++ (ABI=$ABI, libs in $LIBDIR, cuda libs: ${CUDA_LIBS[*]:-none})"
  mkdir -p "$(dirname "$BIN")"
  g++ -O3 -std=c++17 -D_GLIBCXX_USE_CXX11_ABI="$ABI" -I"$ROOT/native" "${INC[@]}" \
      "$ROOT/native/engine.cc" "$ROOT/native/bench.cc" -o "$BIN" \
      -L"$LIBDIR" -Wl,-rpath,"$LIBDIR" "${CUDA_LIBS[@]}" -ltorch -ltorch_cpu -lc10 -lpthread \
      >"$WORK/gxx.log" 2>&1 || { tail -n 40 "$WORK/gxx.log" | tee -a "$REPORT"; die "g++ build failed"; }
  built=g++
fi
[[ -x "$BIN" ]] || die "driver not built at $BIN"
log "-- driver built with $built: $BIN ($(( $(date +%s) - START )) s so far)"

# --- runs ----------------------------------------------------------------------------------
run_driver() {  # name, args...
  local name="$1"; shift
  log "-- $name: densenet_bench $*"
  timeout 150 "$BIN" --model "$MODEL" "$@" >"$WORK/$name.log" 2>&1 || { cat "$WORK/$name.log" | tee -a "$REPORT"; die "$name run failed"; }
  grep -E '^(INFO|RESULT)' "$WORK/$name.log" | tee -a "$REPORT"
}
run_driver cpu-ref --device cpu --threads "$THREADS" --batches "$BATCHES" --warmup 0 --iters 1 --dump "$WORK/cpu"
for prec in fp32 bf16; do
  if [[ "$DEVICE" == cpu && "$prec" == bf16 ]] && ! grep -qw avx512_bf16 /proc/cpuinfo; then
    log "-- skip cpu bf16: this CPU lacks avx512_bf16"; continue
  fi
  run_driver "$prec" --device "$DEVICE" --threads "$THREADS" --precision "$prec" --batches "$BATCHES" \
    --warmup 5 --iters "$ITERS" --dump "$WORK/$prec"
done

# --- parity: device logits vs the CPU run of the same driver, and vs Python torch ------------
"$PY" - "$WORK" "$BATCHES" "$DEVICE" "$MODEL" <<'PYEOF' | tee -a "$REPORT"
import os, sys
import torch
# torch only (no numpy): the GPU machine's Python may not have it.
def load(path, rows):
    n = os.path.getsize(path) // 4
    return torch.from_file(path, shared=False, size=n, dtype=torch.float32).reshape(rows, -1)
work, batches, dev, model = sys.argv[1], [int(b) for b in sys.argv[2].split(",")], sys.argv[3], sys.argv[4]
# fp32 on GPU may use TF32 convolutions (cuDNN default): ~1e-3..1e-2 vs CPU. bf16: ~2e-2..1e-1.
bounds = {"fp32": 5e-2 if dev.startswith("cuda") else 1e-4, "bf16": 0.25}
failed = []
m = torch.jit.load(model, map_location=dev).eval()
for prec in ("fp32", "bf16"):
    for b in batches:
        path = f"{work}/{prec}.b{b}.f32"
        if not os.path.exists(path):
            continue
        ref = load(f"{work}/cpu.b{b}.f32", b)
        got = load(path, b)
        diff = float((ref - got).abs().max())
        top1 = int((ref.argmax(1) == got.argmax(1)).sum())
        rt5, gt5 = ref.topk(5, dim=1).indices.tolist(), got.topk(5, dim=1).indices.tolist()
        t5 = sum(len(set(rt5[r]) & set(gt5[r])) for r in range(b))
        ok = diff <= bounds[prec] and top1 >= b - max(1, b // 16)
        print(f"parity {prec} b{b} vs cpu driver: max abs diff {diff:.3e} (bound {bounds[prec]:g}), "
              f"top-1 {top1}/{b}, top-5 overlap {t5}/{5 * b}, checksum {float(got.sum()):.4f} {'OK' if ok else 'FAIL'}")
        if not ok:
            failed.append(f"{prec} b{b}")
        if prec == "fp32" and b == batches[-1]:
            x = load(f"{work}/cpu.b{b}.in.f32", b).reshape(b, 3, 224, 224).to(dev)
            with torch.inference_mode():
                py = m(x).float().cpu()
            pd = float((py - got).abs().max())
            print(f"parity fp32 b{b} vs python torch on {dev}: max abs diff {pd:.3e} (bound {bounds['fp32']:g}) {'OK' if pd <= bounds['fp32'] else 'FAIL'}")
            if pd > bounds["fp32"]:
                failed.append(f"python fp32 b{b}")
if failed:
    sys.exit("parity failed: " + ", ".join(failed))
PYEOF
[[ "${PIPESTATUS[0]}" == 0 ]] || die "parity check failed"

log "-- summary (ms per batch, median of $ITERS)"
for prec in fp32 bf16; do
  [[ -f "$WORK/$prec.log" ]] || continue
  grep -E '^RESULT' "$WORK/$prec.log" | sed -E "s/^RESULT batch=([0-9]+) median_ms=([0-9.]+) per_image_ms=([0-9.]+).*/  $prec b\1: \2 ms\/batch, \3 ms\/image/" | tee -a "$REPORT"
done
log "CUDA CHECK PASSED ($DEVICE)"
trap - EXIT
finish 0
