"""What doe-sr adds to a run: one array run through the Engine vs a bare ``model.fit``.

    .venv/bin/python bench/train_overhead.py [--run 1] [--repeats 2]

Both train the same SR-NET (one run of ``studies/quickstart.yaml``: its data, patch
size, batch, epochs and steps) on the same ``patch_dataset`` with the same seed:

* bare: ``build_model`` + ``compile`` + ``model.fit`` and nothing else;
* doe-sr: ``Engine.execute``: MLflow child run with params and environment tags,
  per-epoch validation PSNR/SSIM on whole images and metric logging, NaN guard, test
  evaluation, model saved and logged as an artifact, per-image CSV.

The study-level work done once per study (preparing the pairs, the parent run, the
bicubic baseline) is timed separately and not counted. Each variant runs ``repeats``
times, alternating, and the fastest is kept; the machine is shared, so the figures
are noisy: the overhead is the difference of two similar numbers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import describe  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def bare_fit(study, run, splits, seed: int, steps: int | None = None) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of a bare fit; ``steps`` shortens it (warm-up)."""
    import keras

    from doe_sr.sr.data import patch_dataset
    from doe_sr.sr.train import build_model, make_optimizer

    cfg = study.run_config(run.factors)
    tr = cfg.training
    t0, c0 = time.perf_counter(), time.process_time()
    keras.utils.set_random_seed(seed)
    model = build_model(cfg)
    model.compile(optimizer=make_optimizer(tr.optimizer, tr.learning_rate), loss=tr.loss)
    ds = patch_dataset(splits.train, patch_size=study.data.patch_size, batch_size=tr.batch_size, seed=seed)
    model.fit(ds, epochs=1 if steps else tr.epochs, steps_per_epoch=steps or tr.steps_per_epoch, verbose=0,
              shuffle=False)
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default=str(REPO / "studies" / "quickstart.yaml"))
    ap.add_argument("--run", type=int, default=1, help="array run to train (default 1: filters 32)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    from doe_sr.engine.study_engine import Engine
    from doe_sr.study.schema import load_study

    study = load_study(args.study)
    print(f"machine: {describe()}")
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(study, Path(args.study), storage=f"sqlite:///{tmp}/optuna.db", tracking_uri=f"{tmp}/mlruns")
        t0 = time.perf_counter()
        splits = engine.splits()
        engine.ensure_parent()
        once = time.perf_counter() - t0
        run = engine.runs[args.run]
        tr = study.run_config(run.factors).training
        print(f"study {study.name}, run {run.run} {run.factors}: {tr.epochs} epochs x {tr.steps_per_epoch} steps, "
              f"batch {tr.batch_size}, {study.data.patch_size}-pixel patches, {len(splits.val)} validation images")
        print(f"once per study (pairs, parent run, bicubic baseline): {once:.1f} s (not counted)")
        bare_fit(study, run, splits, study.training.seed, steps=3)  # TensorFlow's one-time start-up costs
        bare, full = [], []
        for i in range(args.repeats):
            def doe_sr() -> tuple[float, float]:
                t0, c0 = time.perf_counter(), time.process_time()
                engine.execute(run, 0, verbose=0)
                return time.perf_counter() - t0, time.process_time() - c0

            # Alternate which goes first, so a slow spell of the shared machine hits both.
            if i % 2 == 0:
                bare.append(bare_fit(study, run, splits, study.training.seed))
                full.append(doe_sr())
            else:
                full.append(doe_sr())
                bare.append(bare_fit(study, run, splits, study.training.seed))
        last = engine.tracker.runs(study.name)[-1]  # oldest first: the newest is the last
        validation = last.metrics.get("validation_seconds", float("nan"))
    b, f = min(x[0] for x in bare), min(x[0] for x in full)
    bc, fc = min(x[1] for x in bare), min(x[1] for x in full)
    fmt = lambda runs: ", ".join(f"{w:.2f}/{c:.2f}" for w, c in runs)  # noqa: E731
    print(f"bare model.fit:         {b:7.2f} s wall, {bc:7.2f} s CPU   (all wall/CPU: {fmt(bare)})")
    print(f"doe-sr Engine.execute:  {f:7.2f} s wall, {fc:7.2f} s CPU   (all wall/CPU: {fmt(full)})")
    print(f"overhead: {f - b:+.2f} s wall = {100 * (f - b) / b:+.1f}%; {fc - bc:+.2f} s CPU = "
          f"{100 * (fc - bc) / bc:+.1f}% of the bare training time")
    print(f"  of which per-epoch validation on whole images: {validation:.2f} s = {100 * validation / b:.1f}%;"
          f" the rest (MLflow, test evaluation, saving): {f - b - validation:+.2f} s = "
          f"{100 * (f - b - validation) / b:+.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
