#!/usr/bin/env bash
# The checks and benchmarks that need a CUDA GPU, in one go (run by hand on a GPU machine):
#   bash benchmarks/run_on_gpu.sh [OUTDIR]
# 1. the CUDA tests (tests/test_device.py: draws on CUDA with CPU generators, DDIM on CPU vs CUDA, bf16);
# 2. CIFAR-10 training speed of course_utils.scale's small configuration in bf16, and its resume;
# 3. the U-Net throughput table, and the course UNet against diffusers' UNet2DModel (if diffusers is installed);
# 4. chapter 3's quality-against-evaluations table (1000 digits x 3 seeds), written to OUTDIR;
# 5. the notebooks' GPU sections (on a synthetic stand-in if CIFAR-10 is not in data/cache/).
set -euo pipefail
OUT=${1:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$(pwd) PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/test_device.py -rs 2>&1 | tee "$OUT/cuda_tests_gpu.txt" || true
python3 benchmarks/scale_speed.py --config small --steps 400 --out "$OUT/scale_speed_gpu.txt" || true
python3 benchmarks/unet_throughput.py 2>&1 | tee "$OUT/unet_throughput_gpu.txt"
python3 benchmarks/unet_vs_diffusers.py --out "$OUT/unet_vs_diffusers_gpu.txt" || echo "unet_vs_diffusers skipped (pip install -r benchmarks/requirements.txt)"
python3 benchmarks/digits_samplers.py --n 1000 --seeds 3 --out "$OUT/digits_samplers.json" 2>&1 | tee "$OUT/digits_samplers_gpu.txt"
if [ -d data/cache/cifar-10-batches-py ]; then standin=""; else standin="--standin"; fi
python3 benchmarks/gpu_sections.py $standin --out "$OUT/gpu_sections" 2>&1 | grep -v "it/s" | tee "$OUT/gpu_sections.txt"
