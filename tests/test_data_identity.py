"""What the data *are* (issue 9, item 1): a digest of the images' names and contents,
the split and the LR protocol; a study whose images changed after some run finished
is refused, and every run records its images as an MLflow dataset input."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from doe_sr.sr import data
from doe_sr.sr.data import load_splits
from doe_sr.sr.resize import imresize
from doe_sr.study.schema import DataConfig


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DOE_SR_CACHE", str(tmp_path / "cache"))


def _folder(path: Path, n: int, size: tuple[int, int] = (96, 96), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    for i in range(n):
        iio.imwrite(path / f"img{i:02d}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return path


def _digest(folder: Path, **cfg) -> str:
    return load_splits(DataConfig(source=str(folder), **cfg)).identity.digest


def test_digest_is_what_the_images_are_not_where_they_live(tmp_path):
    folder = _folder(tmp_path / "a", 5)
    first = _digest(folder)
    assert first == _digest(folder)
    assert _digest(shutil.copytree(folder, tmp_path / "elsewhere" / "b")) == first  # a moved folder

    assert _digest(folder, seed=1) != first  # another split of the same images
    assert _digest(folder, max_side=64) != first  # another crop: other pairs
    assert _digest(folder, scale=2) != first  # another LR protocol

    lr = tmp_path / "lr"
    lr.mkdir()
    for p in sorted(folder.iterdir()):
        iio.imwrite(lr / f"{p.stem}x4.png", imresize(iio.imread(p), 0.25))
    given = load_splits(DataConfig(source=str(folder), lr_source=str(lr))).identity
    assert given.digest != first and given.protocol["lr"] == "given"  # same pixels, given LR files

    iio.imwrite(folder / "img03.png", np.zeros((96, 96, 3), np.uint8))  # one image's content
    changed = _digest(folder)
    assert changed != first
    (folder / "img03.png").rename(folder / "img99.png")  # one image's name
    assert _digest(folder) not in (first, changed)


def test_identity_lists_the_split_and_the_protocol(tmp_path):
    folder = _folder(tmp_path / "a", 6)
    sp = load_splits(DataConfig(source=str(folder), split=(4, 1, 1), max_side=64))
    ident = sp.identity
    assert ident.schema()["split"] == {part: [p.name for p in getattr(sp, part)] for part in ("train", "val", "test")}
    profile = ident.profile()
    assert (profile["images"], profile["train"], profile["val"], profile["test"]) == (6, 4, 1, 1)
    assert (profile["scale"], profile["max_side"], profile["lr"]) == (4, 64, "bicubic")
    assert profile["bytes"] == sum(p.stat().st_size for p in folder.iterdir())
    hashes = {name: hr for name, hr, _ in ident.images}
    assert hashes["img00"] == hashlib.sha256((folder / "img00.png").read_bytes()).hexdigest()
    assert sp.fingerprint == ident.digest


def test_sample_identity_hashes_the_arrays():
    a, b = (load_splits(DataConfig(source="sample", max_side=64)).identity for _ in range(2))
    assert a.digest == b.digest and a.name == "sample"
    assert len(a.images) >= 3 and all(len(hr) == 64 and lr == "" for _, hr, lr in a.images)


def test_file_digests_are_cached_by_path_size_and_mtime(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"a" * 1000)
    assert data.file_sha256(path) == hashlib.sha256(b"a" * 1000).hexdigest()
    cache = tmp_path / "cache" / "digests"
    assert not cache.exists() or not list(cache.iterdir())  # just written: too recent to trust its mtime

    old = time.time() - 3600
    os.utime(path, (old, old))
    st = path.stat()
    assert data.file_sha256(path) == hashlib.sha256(b"a" * 1000).hexdigest()
    assert len(list(cache.iterdir())) == 1
    # Same size and mtime: the cache answers without reading (so it really is used) ...
    path.write_bytes(b"b" * 1000)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert data.file_sha256(path) == hashlib.sha256(b"a" * 1000).hexdigest()
    # ... and any other mtime reads the file again.
    os.utime(path, (old + 1, old + 1))
    assert data.file_sha256(path) == hashlib.sha256(b"b" * 1000).hexdigest()


# -- the engine -------------------------------------------------------------------------
def _popen(*argv: str, cwd: Path) -> subprocess.Popen:
    # SIGINT at its default in the child, even when the suite runs with it ignored (issue 9
    # item 3): `run` hands SIGINT to its workers, and an inherited SIG_IGN would keep them going.
    return subprocess.Popen([sys.executable, "-m", "doe_sr.cli", *argv], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _cli(*argv: str, cwd: Path) -> tuple[int, str, str]:
    proc = _popen(*argv, cwd=cwd)
    out, err = proc.communicate(timeout=900)
    return proc.returncode, out, err


def _complete(db: Path) -> int:
    """COMPLETE trials in an Optuna SQLite store (0 before it exists)."""
    if not db.exists():
        return 0
    with sqlite3.connect(db, timeout=120) as con:
        try:
            return con.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
        except sqlite3.OperationalError:  # schema not created yet
            return 0


def _stop_after_first_run(study: Path, db: Path) -> int:
    """Start `doe-sr run`, stop it with SIGTERM once a run is complete; return the runs done."""
    proc = _popen("run", str(study), "--no-report", cwd=study.parent)
    deadline = time.monotonic() + 600
    while _complete(db) < 1:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no run finished within 10 minutes"
        time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=300)
    return _complete(db)


def _inputs(client, run) -> list[tuple[str, str]]:
    return [(i.dataset.name, i.dataset.digest) for i in client.get_run(run.info.run_id).inputs.dataset_inputs]


def test_changed_images_are_refused_after_a_run_finished_unless_accepted(tiny_study: Path):
    from mlflow.tracking import MlflowClient

    work = tiny_study.parent
    db = work / "mlruns" / "optuna.db"
    done = _stop_after_first_run(tiny_study, db)
    assert 1 <= done < 9, "the study must be stopped part-way"

    other = _folder(work / "other", 6, size=(128, 128), seed=3)
    tiny_study.write_text(tiny_study.read_text().replace("source: sample", f"source: {other}"))
    client = MlflowClient(f"sqlite:///{work / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    before = client.search_runs([exp.experiment_id])

    rc, out, err = _cli("run", str(tiny_study), "--no-report", cwd=work)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1, out + err
    assert "Traceback" not in out + err
    assert "images" in lines[0] and "new name" in lines[0] and "--accept-new-data" in lines[0], lines[0]
    assert _complete(db) == done  # nothing trained ...
    assert len(client.search_runs([exp.experiment_id])) == len(before)  # ... nor recorded

    rc, out, err = _cli("run", str(tiny_study), "--no-report", "--accept-new-data", cwd=work)
    assert rc == 0, out[-3000:] + err[-3000:]
    assert _complete(db) == 9

    old = load_splits(DataConfig(source="sample", max_side=96)).identity
    new = load_splits(DataConfig(source=str(other), max_side=96)).identity
    parent = next(r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("doe_sr.role") == "parent")
    assert set(_inputs(client, parent)) == {("sample", old.digest), ("other", new.digest)}
    assert parent.data.tags["doe_sr.data_digest"] == new.digest
    children = [r for r in client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
                if r.data.tags.get("doe_sr.role") == "array_run" and r.info.status == "FINISHED"]
    assert len(children) == 9
    digests = [_inputs(client, r) for r in children]
    assert all(len(d) == 1 for d in digests)
    assert [d[0][1] for d in digests] == [old.digest] * done + [new.digest] * (9 - done)
    assert [r.data.tags["doe_sr.data_digest"] for r in children] == [d[0][1] for d in digests]
