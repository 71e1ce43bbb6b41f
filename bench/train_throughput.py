"""Training speed of the built-in networks; EDSR and RRDBNet side by side with PyTorch.

    .venv/bin/python bench/train_throughput.py [--models srnet,edsr,rrdbnet] [--seconds 10]
        [--patch 64] [--batch 8] [--lr-patch 32] [--scale 4] [--rounds 4] [--threads N]

SR-NET (``srnet``): for filters 32, 64 and 128 (depth 5, the quickstart's 64-pixel
patches and batch 8 by default), one Adam/MAE training step on a fixed in-memory batch
is timed (median of the steps run in ``seconds`` after a warm-up), with and without XLA
(``jit_compile``), and its achieved GFLOP/s set against the CPU's fp32 peak.

EDSR and RRDBNet (``edsr``, ``rrdbnet``; post-upsampling, ``--lr-patch`` LR patches, x4):
EDSR-baseline (16 blocks x 64 features) and a small RRDBNet (6 blocks, 32 features,
growth 16). The same architecture is written here in PyTorch (NCHW, nn.PixelShuffle,
F.interpolate nearest), starts from the Keras model's initial weights (the outputs are
compared and printed; the parameter counts must match), and one Adam + L1 training step
on the same batch is timed for Keras (XLA off and on) and PyTorch in the same run,
interleaved: ``rounds`` rounds of (Keras, PyTorch, Keras+XLA) blocks of
``seconds / rounds`` each, so that a noisy neighbour slows all three alike; the medians
over all rounds are compared. PyTorch runs in a child process that never imports
TensorFlow (see the note above ``_timed_block`` for why). Both get the same thread count
(``--threads``, default all logical cores): TensorFlow's intra-op pool is set to it
before the first op, and ``torch.set_num_threads`` to the same number in the child.

FLOPs per step = 3 x the forward FLOPs of the convolutions
(:func:`doe_sr.sr.models.srnet.count_flops`; backward costs about twice the forward: one
product for the input gradient, one for the weight gradient) x batch size. The peak is
estimated from the CPU's flags and clock (see ``bench/_machine.py``); on a GPU the
peak is not estimated. Timings on a shared machine are noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_ENV = dict(os.environ)  # before TensorFlow's import adds KMP_*/TF* variables: the PyTorch worker's
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


def srnet_table(args: argparse.Namespace, peak: float) -> None:
    from doe_sr.sr.models.srnet import build_srnet, count_flops

    print(f"SR-NET depth 5, {args.patch}x{args.patch} patches, batch {args.batch}, Adam + MAE\n")
    print(f"{'filters':>7} {'GFLOP/step':>10} {'XLA':>5} {'step ms':>9} {'patches/s':>10} {'GFLOP/s':>8} {'% peak':>7}")
    for filters in (32, 64, 128):
        flops = 3 * count_flops(build_srnet(filters=filters, depth=5), args.patch, args.patch) * args.batch
        for jit in (False, True):
            t = step_seconds(filters, args.patch, args.batch, args.seconds, jit)
            rate = flops / t / 1e9
            print(f"{filters:7d} {flops / 1e9:10.2f} {'on' if jit else 'off':>5} {t * 1e3:9.1f} "
                  f"{args.batch / t:10.1f} {rate:8.1f} {100 * rate / peak:6.1f}%")
    print()


# ------------------------------------------------------------ PyTorch twins (NCHW)

# Sizes of the side-by-side comparison: EDSR-baseline as published, and an RRDBNet small
# enough for 2 CPU cores (ESRGAN's is 23 blocks x 64 features, growth 32).
EDSR_SIZE = dict(num_block=16, num_feat=64)
RRDB_SIZE = dict(num_block=6, num_feat=32, num_grow_ch=16)


def torch_edsr(scale: int, num_block: int, num_feat: int):
    """BasicSR's EDSR without mean shift: the same layers as `doe_sr.sr.models.edsr.build_edsr`."""
    import torch.nn as nn

    conv = lambda i, o: nn.Conv2d(i, o, 3, 1, 1)  # noqa: E731

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = conv(num_feat, num_feat), conv(num_feat, num_feat)

        def forward(self, x):
            return x + self.conv2(self.conv1(x).relu())

    class EDSR(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv_first = conv(3, num_feat)
            self.body = nn.Sequential(*[Block() for _ in range(num_block)])
            self.conv_body = conv(num_feat, num_feat)
            steps = [3] if scale == 3 else [2] * (scale.bit_length() - 1)
            self.upsample = nn.Sequential(*[m for r in steps
                                            for m in (conv(num_feat, num_feat * r * r), nn.PixelShuffle(r))])
            self.conv_last = conv(num_feat, 3)

        def forward(self, x):
            feat = self.conv_first(x)
            feat = feat + self.conv_body(self.body(feat))
            return self.conv_last(self.upsample(feat))

    return EDSR()


def torch_rrdbnet(scale: int, num_block: int, num_feat: int, num_grow_ch: int):
    """BasicSR's RRDBNet (x4 as ESRGAN; x2/x8/x3 like `build_rrdbnet`'s nearest steps)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    conv = lambda i, o: nn.Conv2d(i, o, 3, 1, 1)  # noqa: E731
    lrelu = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
    nf, gc = num_feat, num_grow_ch

    class RDB(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.ModuleList([conv(nf + i * gc, gc) for i in range(4)] + [conv(nf + 4 * gc, nf)])

        def forward(self, x):
            feats = [x]
            for c in self.convs[:4]:
                feats.append(lrelu(c(torch.cat(feats, 1))))
            return self.convs[4](torch.cat(feats, 1)) * 0.2 + x

    class RRDB(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rdbs = nn.Sequential(RDB(), RDB(), RDB())

        def forward(self, x):
            return self.rdbs(x) * 0.2 + x

    class RRDBNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv_first = conv(3, nf)
            self.body = nn.Sequential(*[RRDB() for _ in range(num_block)])
            self.conv_body = conv(nf, nf)
            self.steps = [3] if scale == 3 else [2] * (scale.bit_length() - 1)
            self.conv_up = nn.ModuleList([conv(nf, nf) for _ in self.steps])
            self.conv_hr, self.conv_last = conv(nf, nf), conv(nf, 3)

        def forward(self, x):
            feat = self.conv_first(x)
            feat = feat + self.conv_body(self.body(feat))
            for r, c in zip(self.steps, self.conv_up):
                feat = lrelu(c(F.interpolate(feat, scale_factor=r, mode="nearest")))
            return self.conv_last(lrelu(self.conv_hr(feat)))

    return RRDBNet()


# ------------------------------------------------------------- side-by-side timing

# PyTorch runs in a child process of this script (``--torch-worker``), never in the
# process that imported TensorFlow. Measured here: merely importing TensorFlow first made
# PyTorch's EDSR step ~9x slower (410 ms instead of 47 ms, batch 2, 12 px) - the import
# loads a second libgomp (scikit-learn's) next to torch's - and Keras steps run in the same
# process slowed it further (TensorFlow's idle pool threads spin). A separate process is
# how a PyTorch user runs it. The two processes take turns: while one times a block the
# other waits on a pipe, so they never compete for the cores.


def _timed_block(step, seconds: float) -> list[float]:
    times: list[float] = []
    t_end = time.perf_counter() + seconds
    while len(times) < 2 or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def torch_worker() -> int:
    """Child process: JSON commands on stdin, one JSON answer per line on stdout."""
    import torch
    import torch.nn.functional as F

    net = opt = tx = ty = None

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.l1_loss(net(tx), ty).backward()
        opt.step()

    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "init":
            torch.set_num_threads(cmd["threads"])
            data = np.load(cmd["npz"])
            net = (torch_edsr if cmd["which"] == "edsr" else torch_rrdbnet)(cmd["scale"], **cmd["size"])
            convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
            with torch.no_grad():
                for n, conv in enumerate(convs):  # same network, same initial weights as Keras
                    conv.weight.copy_(torch.from_numpy(data[f"w{n}"]))
                    conv.bias.copy_(torch.from_numpy(data[f"b{n}"]))
                tx = torch.from_numpy(data["x"].transpose(0, 3, 1, 2).copy())
                ty = torch.from_numpy(data["y"].transpose(0, 3, 1, 2).copy())
                out = net(tx).numpy().transpose(0, 2, 3, 1)
            opt = torch.optim.Adam(net.parameters(), lr=1e-3)
            step()
            step()
            answer = {"params": sum(t.numel() for t in net.parameters()), "n_convs": len(convs),
                      "max_diff": float(np.abs(out - data["keras_out"]).max()),
                      "threads": torch.get_num_threads(), "version": torch.__version__}
        elif cmd["cmd"] == "block":
            answer = {"times": _timed_block(step, cmd["seconds"])}
        else:
            return 0
        print(json.dumps(answer), flush=True)
    return 0


def _keras_weights_for_torch(model, x: np.ndarray, y: np.ndarray, path: Path) -> None:
    """The Keras model's conv weights in PyTorch's layout and forward order, with x, y, model(x).

    Convs pair up in order (both networks list them in forward order); a conv feeding
    Keras' `PixelShuffle` gets its output channels permuted back (`torch_to_keras_channels`),
    since depth_to_space orders them differently from nn.PixelShuffle.
    """
    import keras

    from doe_sr.sr.models.layers import PixelShuffle, torch_to_keras_channels

    shuffles = {layer.name.replace(".shuffle", ".conv"): layer.factor
                for layer in model.layers if isinstance(layer, PixelShuffle)}
    arrays = {"x": x, "y": y, "keras_out": np.asarray(model(x))}
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    for n, layer in enumerate(convs):
        k, b = layer.kernel.numpy(), layer.bias.numpy()
        if layer.name in shuffles:
            inv = np.argsort(torch_to_keras_channels(k.shape[-1], shuffles[layer.name]))
            k, b = k[..., inv], b[inv]
        arrays[f"w{n}"], arrays[f"b{n}"] = k.transpose(3, 2, 0, 1), b
    np.savez(path, **arrays)


class _TorchProcess:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--torch-worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=_ENV)

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the PyTorch worker exited (code {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def compare_with_torch(which: str, args: argparse.Namespace) -> dict:
    """Median step seconds of Keras (XLA off/on) and PyTorch on one batch, interleaved."""
    import tempfile

    import keras

    from doe_sr.sr.models.edsr import build_edsr
    from doe_sr.sr.models.esrgan import build_rrdbnet

    build, size = (build_edsr, EDSR_SIZE) if which == "edsr" else (build_rrdbnet, RRDB_SIZE)
    rng = np.random.default_rng(0)
    s, p = args.scale, args.lr_patch
    x = rng.random((args.batch, p, p, 3), dtype=np.float32)
    y = rng.random((args.batch, p * s, p * s, 3), dtype=np.float32)

    keras_steps, params = {}, 0
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        model = build(scale=s, **size)
        model.compile(optimizer="adam", loss="mae", jit_compile=jit)
        params = model.count_params()
        if not jit:
            keras.utils.set_random_seed(0)
            initial = build(scale=s, **size)  # untrained copy: PyTorch starts from its weights
        t0 = time.perf_counter()
        model.train_on_batch(x, y)  # trace (and XLA-compile)
        model.train_on_batch(x, y)
        print(f"  {which} keras XLA {'on' if jit else 'off'}: first two steps {time.perf_counter() - t0:.1f} s",
              flush=True)
        keras_steps[jit] = lambda m=model: m.train_on_batch(x, y)

    worker = _TorchProcess()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            npz = Path(tmp) / "weights.npz"
            _keras_weights_for_torch(initial, x, y, npz)
            info = worker.ask(cmd="init", which=which, scale=s, size=size, npz=str(npz), threads=args.threads)
        if info["params"] != params:
            raise SystemExit(f"{which}: Keras has {params} parameters, PyTorch {info['params']}")
        print(f"  {which}: PyTorch twin ({info['threads']} threads, torch {info['version']}) given the Keras "
              f"weights: max |output difference| {info['max_diff']:.1e}", flush=True)
        times: dict[str, list[float]] = {"keras": [], "keras_xla": [], "torch": []}
        block = args.seconds / args.rounds
        for _ in range(args.rounds):
            times["keras"] += _timed_block(keras_steps[False], block)
            times["torch"] += worker.ask(cmd="block", seconds=block)["times"]
            times["keras_xla"] += _timed_block(keras_steps[True], block)
    finally:
        worker.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"params": {"keras": params, "torch": info["params"]}, "median": med,
            "steps": {k: len(v) for k, v in times.items()}}


def torch_table(models: list[str], args: argparse.Namespace) -> None:
    print(f"Keras vs PyTorch: x{args.scale}, {args.lr_patch}x{args.lr_patch} LR patches, batch {args.batch}, "
          f"Adam + L1, {args.threads} threads each (PyTorch in a child process), "
          f"{args.rounds} interleaved rounds of {args.seconds / args.rounds:.1f} s per engine")
    print(f"  edsr = EDSR-baseline {EDSR_SIZE}; rrdbnet = RRDBNet {RRDB_SIZE}\n")
    rows = []
    for which in models:
        rows.append((which, compare_with_torch(which, args)))
        print(f"  load average after {which}: {_load()}", flush=True)
    print(f"\n{'model':>8} {'params keras':>12} {'params torch':>12} {'keras ms':>9} {'keras+XLA ms':>12} "
          f"{'torch ms':>9} {'ratio':>6} {'ratio XLA':>9}  steps k/x/t")
    for which, r in rows:
        p, m, n = r["params"], r["median"], r["steps"]
        print(f"{which:>8} {p['keras']:12,d} {p['torch']:12,d} {m['keras'] * 1e3:9.1f} {m['keras_xla'] * 1e3:12.1f} "
              f"{m['torch'] * 1e3:9.1f} {m['keras'] / m['torch']:6.2f} {m['keras_xla'] / m['torch']:9.2f}  "
              f"{n['keras']}/{n['keras_xla']}/{n['torch']}")


def _load() -> str:
    """1/5/15-minute load averages: other jobs on the cores make OpenMP (PyTorch) suffer most."""
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> int:
    if sys.argv[1:] == ["--torch-worker"]:
        return torch_worker()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="srnet,edsr,rrdbnet",
                    help="comma-separated subset of srnet, edsr, rrdbnet")
    ap.add_argument("--patch", type=int, default=64, help="SR-NET (HR-size) patch")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0,
                    help="timed seconds per SR-NET setting, and per engine for edsr/rrdbnet")
    ap.add_argument("--lr-patch", type=int, default=32, help="edsr/rrdbnet LR patch")
    ap.add_argument("--scale", type=int, default=4, help="edsr/rrdbnet scale")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds for edsr/rrdbnet")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="TensorFlow intra-op threads = torch.set_num_threads (default: all cores)")
    args = ap.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - {"srnet", "edsr", "rrdbnet"})
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; choose from srnet, edsr, rrdbnet")

    import tensorflow as tf

    # Before the first op: the same thread pool size for both frameworks.
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    peak, how = cpu_peak_gflops()
    print(f"machine: {describe()}")
    print(f"fp32 peak estimate: {peak:.0f} GFLOP/s = {how}")
    print(f"threads: TensorFlow intra-op {tf.config.threading.get_intra_op_parallelism_threads()}; "
          f"load average at start: {_load()}\n")
    others = [m for m in models if m != "srnet"]
    if "srnet" in models:
        srnet_table(args, peak)
    if others:
        torch_table(others, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
