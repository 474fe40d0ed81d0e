#!/usr/bin/env bash
# The GPU measurements of issue 13, in two parts that each fit a 10-minute call.
#
#   benchmarks/gpu_session.sh models   TARBALL OUT   # speedrun + trainer throughput (~5 min)
#   benchmarks/gpu_session.sh pipeline TARBALL OUT   # one CIFAR-10 seed through snakemake (~4 min)
#
# TARBALL: cifar10-jpeg.tar.gz (extracted once into data/cifar10-jpeg);
# OUT: folder that receives the JSON results, the regenerated docs/benchmarks.md
# and the logs. Run from the repository root in an environment with the
# package's dependencies, CUDA PyTorch and Snakemake 9.
set -euo pipefail
part=$1 tarball=$2 out=$3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$out" data
[ -d data/cifar10-jpeg ] || tar xzf "$tarball" -C data
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
case "$part" in
  models)
    python benchmarks/speedrun.py --root data/cifar10-jpeg --cache data/cifar10-jpeg.npz \
        --runs 3 2>&1 | tee "$out/speedrun.log"
    cp benchmarks/results/speedrun_cuda.json "$out/"
    python benchmarks/trainer_throughput.py --dataset imagefolder --root data/cifar10-jpeg \
        --model cifar_resnet18 --n-train 50000 --epochs 3 --batch-size 512 --plain-workers 8 \
        --threads 8 --rounds 1 --cudnn-benchmark --compile-modes default reduce-overhead \
        2>&1 | tee "$out/trainer_throughput.log"
    cp benchmarks/results/trainer_throughput_cuda.json docs/benchmarks.md "$out/"
    ;;
  pipeline)
    python benchmarks/pipeline.py --data-root data/cifar10-jpeg --workdir /tmp/unseen_pipeline \
        --cores 16 --gpu-slots 6 2>&1 | tee "$out/pipeline.log"
    cp benchmarks/results/pipeline_cuda.json "$out/"
    cp -r /tmp/unseen_pipeline/logs "$out/pipeline_logs"
    cp /tmp/unseen_pipeline/results/summary.csv "$out/pipeline_summary.csv"
    ;;
  *) echo "usage: $0 models|pipeline TARBALL OUT" >&2; exit 2 ;;
esac
