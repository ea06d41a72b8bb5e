#!/usr/bin/env bash
# On a machine with a CUDA GPU (torch, transformers, numpy, pytest and hypothesis installed;
# deepdoctection is not needed): the CUDA capture tests, then the buffer benchmark and the hook
# benchmark on the CPU and on the GPU. JSON results go to benchmarks/results/ and, if OUT is set,
# to $OUT as well.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
python3 -m pytest -q -p no:cacheprovider tests/test_buffer.py tests/test_capture.py
cd benchmarks
python3 bench_buffer.py
python3 bench_hook.py --quick
python3 bench_hook.py --quick --device cuda
if [ -n "${OUT:-}" ]; then cp results/*.json "$OUT"/; fi
