#!/usr/bin/env bash
# Run first on a new GPU machine: CUDA and bf16, sampling-route Phi == forward-route Phi on the GPU,
# a few g2rl and grpo steps of SmolLM2 (with TRL's vLLM generation where vllm imports) and their
# step-time ratio. On a CPU-only machine it runs the same checks on the tiny preset.
#
#   bash bench/gpu_check.sh                     # defaults
#   bash bench/gpu_check.sh --preset qwen3-1.7b-base --vllm on --set training.max_completion_length=256
#
# PYTHON selects the interpreter (default .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false
exec "$PYTHON" -m bench.gpu_check "$@"
