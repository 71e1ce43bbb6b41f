"""SR-NET training speed: step time and achieved GFLOP/s against the machine's fp32 peak.

    .venv/bin/python bench/train_throughput.py [--patch 64] [--batch 8] [--seconds 10]

For filters 32, 64 and 128 (depth 5, the quickstart's 64-pixel patches and batch 8 by
default), one Adam/MAE training step on a fixed in-memory batch is timed (median of the
steps run in ``seconds`` after a warm-up), with and without XLA (``jit_compile``).

FLOPs per step = 3 x the forward FLOPs of the convolutions
(:func:`doe_sr.sr.models.srnet.count_flops`; backward costs about twice the forward: one
product for the input gradient, one for the weight gradient) x batch size. The peak is
estimated from the CPU's flags and clock (see ``bench/_machine.py``); on a GPU the
peak is not estimated. Timings on a shared machine are noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from _machine import cpu_peak_gflops, describe  # noqa: E402


def step_seconds(filters: int, patch: int, batch: int, seconds: float, jit: bool) -> float:
    import keras

    from doe_sr.sr.models.srnet import build_srnet

    keras.utils.set_random_seed(0)
    model = build_srnet(filters=filters, depth=5)
    model.compile(optimizer="adam", loss="mae", jit_compile=jit)
    x = np.random.default_rng(0).random((batch, patch, patch, 3), dtype=np.float32)
    for _ in range(2):  # trace/compile, then one warm step
        model.train_on_batch(x, x)
    times: list[float] = []
    t_end = time.perf_counter() + seconds
    while len(times) < 3 or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        model.train_on_batch(x, x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()

    from doe_sr.sr.models.srnet import build_srnet, count_flops

    peak, how = cpu_peak_gflops()
    print(f"machine: {describe()}")
    print(f"fp32 peak estimate: {peak:.0f} GFLOP/s = {how}")
    print(f"SR-NET depth 5, {args.patch}x{args.patch} patches, batch {args.batch}, Adam + MAE\n")
    print(f"{'filters':>7} {'GFLOP/step':>10} {'XLA':>5} {'step ms':>9} {'patches/s':>10} {'GFLOP/s':>8} {'% peak':>7}")
    for filters in (32, 64, 128):
        flops = 3 * count_flops(build_srnet(filters=filters, depth=5), args.patch, args.patch) * args.batch
        for jit in (False, True):
            t = step_seconds(filters, args.patch, args.batch, args.seconds, jit)
            rate = flops / t / 1e9
            print(f"{filters:7d} {flops / 1e9:10.2f} {'on' if jit else 'off':>5} {t * 1e3:9.1f} "
                  f"{args.batch / t:10.1f} {rate:8.1f} {100 * rate / peak:6.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
