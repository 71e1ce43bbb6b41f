"""Bring your own network (issue 11): a user's builder in a file, a model registered by an
entry point, factors on dotted setting paths, and the errors a wrong builder gets before
anything trains. Every study runs through the real CLI into a real MLflow store."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import doe_sr
from doe_sr.core.errors import UserError

#: A post-upsampling network of the test's own: it appends the keyword arguments it is
#: built with to a JSON-lines file beside it, so the test sees what doe-sr handed it.
USER_NET = '''
import json, os
from pathlib import Path

import keras
from keras import layers


def build(*, scale, width: int, kernel: int = 3, activation="relu", shape_bug: bool = False):
    with open(Path(__file__).with_name("calls.jsonl"), "a") as fh:
        fh.write(json.dumps({"scale": scale, "width": width, "kernel": kernel, "activation": activation}) + "\\n")
    x = keras.Input(shape=(None, None, 3))
    y = layers.Conv2D(width, kernel, padding="same", activation=activation)(x)
    y = layers.Conv2D(3 * scale * scale, 3, padding="same", kernel_initializer="zeros")(y)
    if shape_bug:  # forgot the pixel shuffle: an LR-sized output of 3*scale**2 channels
        return keras.Model(x, y)
    y = PixelShuffle(scale)(y)
    base = layers.UpSampling2D(scale, interpolation="bilinear")(x)
    return keras.Model(x, layers.Add()([y, base]))


@keras.saving.register_keras_serializable(package="tests")
class PixelShuffle(layers.Layer):
    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, x):
        return keras.ops.depth_to_space(x, self.scale)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}
'''

BYO_STUDY = """
name: byo
design:
  array: L4(2^3)
  factors:
    - {{name: model.width, levels: [4, 8]}}
    - {{name: model.kernel, levels: [1, 3]}}
    - {{name: training.loss, levels: [mae, charbonnier]}}
data: {{source: sample, patch_size: 32, max_side: 96}}
model: {{builder: "nets/user_net.py:build", input: lr, activation: {activation}}}
training: {{epochs: 1, steps_per_epoch: 2, batch_size: 2, learning_rate: 0.001}}
tracking: {{uri: {mlruns}}}
"""


def _study(tmp_path: Path, activation: str = "elu", extra: str = "") -> Path:
    (tmp_path / "nets").mkdir(exist_ok=True)
    (tmp_path / "nets" / "user_net.py").write_text(USER_NET)
    path = tmp_path / "byo.yaml"
    path.write_text(BYO_STUDY.format(activation=activation, mlruns=tmp_path / "mlruns") + extra)
    return path


def _finished_children(mlruns: Path, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return [r for r in client.search_runs([exp.experiment_id], max_results=1000)
            if r.data.tags.get("doe_sr.role") == "array_run"]


def _one_line_exit_2(out) -> str:
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stdout[-2000:] + out.stderr[-3000:]
    return lines[0]


def test_a_user_builder_gets_every_factor_level_and_its_runs_load_again(tmp_path: Path):
    study = _study(tmp_path)
    out = doe_sr("run", str(study), cwd=tmp_path, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    calls = [json.loads(line) for line in (tmp_path / "nets" / "calls.jsonl").read_text().splitlines()]
    received = {(c["width"], c["kernel"]) for c in calls}
    # L4(2^3): (4, 1), (4, 3), (8, 1), (8, 3); each built with the scale and the fixed setting
    assert received == {(4, 1), (4, 3), (8, 1), (8, 3)}, calls
    assert {c["scale"] for c in calls} == {4} and {c["activation"] for c in calls} == {"elu"}

    children = _finished_children(tmp_path / "mlruns", "byo")
    assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
    levels = {(c.data.params["model.width"], c.data.params["model.kernel"], c.data.params["training.loss"])
              for c in children}
    assert levels == {("4", "1", "mae"), ("4", "3", "charbonnier"), ("8", "1", "charbonnier"), ("8", "3", "mae")}
    child = children[0]
    assert child.data.params["model.input"] == "lr"
    assert child.data.params["model.builder_file"] == str((tmp_path / "nets" / "user_net.py").resolve())
    for metric in ("params", "inference_seconds_per_mp", "train_memory_mb"):
        assert metric in child.data.metrics, metric
    assert child.data.metrics["params"] > 0 and child.data.metrics["inference_seconds_per_mp"] > 0

    # The run's .keras file (a custom layer from the user's file) loads in evaluate: its
    # test PSNR equals what the run measured in memory while training.
    hr = tmp_path / "hr"
    hr.mkdir()
    from doe_sr.sr.data import load_splits
    from PIL import Image

    from doe_sr.study.schema import load_study

    for pair in load_splits(load_study(study).data).test:
        Image.fromarray(pair.hr).save(hr / f"{Path(pair.name).stem}.png")
    ev = doe_sr("evaluate", "--model", child.info.run_id, "--hr", str(hr), "--tracking-uri",
                str(tmp_path / "mlruns"), "--format", "json", cwd=tmp_path)
    assert ev.returncode == 0, ev.stdout[-2000:] + ev.stderr[-2000:]
    measured = json.loads(ev.stdout)
    assert measured["mean"]["psnr_y"] == pytest.approx(child.data.metrics["test_psnr"], abs=1e-6), measured


def test_a_setting_the_builder_does_not_take_is_one_line_before_anything_runs(tmp_path: Path):
    study = _study(tmp_path)
    study.write_text(study.read_text().replace("model.kernel", "model.dilation"))
    line = _one_line_exit_2(doe_sr("run", str(study), cwd=tmp_path))
    assert "model.dilation" in line and "does not accept" in line and "width, kernel" in line, line
    assert not (tmp_path / "nets" / "calls.jsonl").exists(), "the builder must not even be called"
    assert not _finished_children(tmp_path / "mlruns", "byo")


def test_a_builder_with_the_wrong_output_shape_fails_the_study_up_front(tmp_path: Path):
    study = _study(tmp_path, extra="")
    study.write_text(study.read_text().replace("activation: elu}", "activation: elu, shape_bug: true}"))
    line = _one_line_exit_2(doe_sr("run", str(study), cwd=tmp_path, timeout=600))
    assert "must output" in line and "input: lr" in line, line
    assert not _finished_children(tmp_path / "mlruns", "byo"), "no run may start"


ENTRY_POINT_NET = '''
import keras
from keras import layers


def build(*, scale: int, channels: int = 8):
    x = keras.Input(shape=(None, None, 3))
    y = layers.Conv2D(channels, 3, padding="same", activation="relu")(x)
    y = layers.Conv2D(3, 3, padding="same", kernel_initializer="zeros")(y)
    return keras.Model(x, layers.Add()([x, y]))


build.model_input = "bicubic"
'''


def test_a_model_registered_through_an_entry_point_runs_by_name(tmp_path: Path):
    site = tmp_path / "site"
    (site / "doe_sr_testnets").mkdir(parents=True)
    (site / "doe_sr_testnets" / "__init__.py").write_text(ENTRY_POINT_NET)
    info = site / "doe_sr_testnets-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: doe-sr-testnets\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[doe_sr.models]\nresnet_tiny = doe_sr_testnets:build\n")
    study = tmp_path / "ep.yaml"
    study.write_text(textwrap.dedent(f"""
        name: ep
        design:
          array: L4(2^3)
          factors:
            - {{name: model.channels, levels: [4, 8]}}
            - {{name: learning_rate, levels: [0.001, 0.0001]}}
        data: {{source: sample, patch_size: 32, max_side: 96}}
        model: {{name: resnet_tiny}}
        training: {{epochs: 1, steps_per_epoch: 2, batch_size: 2}}
        tracking: {{uri: {tmp_path / 'mlruns'}}}
        """))
    env = {"PYTHONPATH": str(site)}
    out = doe_sr("run", str(study), "--no-report", cwd=tmp_path, env=env, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    children = _finished_children(tmp_path / "mlruns", "ep")
    assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.params["model.name"] for c in children} == {"resnet_tiny"}
    assert {c.data.params["model.channels"] for c in children} == {"4", "8"}
    assert {c.data.params["model.input"] for c in children} == {"bicubic"}

    # Without the package the name is unknown: one line listing what is known.
    line = _one_line_exit_2(doe_sr("design", str(study), cwd=tmp_path))
    assert "unknown model 'resnet_tiny'" in line and "srnet, rrdbnet, edsr" in line, line


ARCHITECTURES = """
name: arch
design:
  array: L9(3^4)
  factors:
    - {{name: model.name, levels: [srnet, edsr, rrdbnet]}}
    - {{name: training.learning_rate, levels: [0.001, 0.0003, 0.0001]}}
    - {{name: training.loss, levels: [mae, mse, charbonnier]}}
    - {{name: data.patch_size, levels: [32, 48, 64]}}
data: {{source: sample, patch_size: 32, max_side: 96}}
model: {{depth: 4, filters: 4, num_block: 1, num_feat: 8, num_grow_ch: 4}}
training: {{epochs: 1, steps_per_epoch: 2, batch_size: 2}}
tracking: {{uri: {mlruns}}}
"""


def test_a_mixed_architecture_l9_finishes_and_a_trained_rrdbnet_upscales_as_in_memory(tmp_path: Path):
    study = tmp_path / "arch.yaml"
    study.write_text(ARCHITECTURES.format(mlruns=tmp_path / "mlruns"))
    out = doe_sr("run", str(study), "--no-report", cwd=tmp_path, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    children = _finished_children(tmp_path / "mlruns", "arch")
    assert len(children) == 9 and {c.info.status for c in children} == {"FINISHED"}
    by_model: dict[str, list] = {}
    for c in children:
        by_model.setdefault(c.data.params["model.name"], []).append(c)
    assert {k: len(v) for k, v in by_model.items()} == {"srnet": 3, "edsr": 3, "rrdbnet": 3}
    # each network got its own settings, and only those
    assert by_model["srnet"][0].data.params["model.filters"] == "4" and \
        "model.num_block" not in by_model["srnet"][0].data.params
    assert by_model["edsr"][0].data.params["model.num_feat"] == "8" and \
        "model.filters" not in by_model["edsr"][0].data.params
    assert {c.data.params["model.input"] for c in by_model["rrdbnet"]} == {"lr"}
    params = {m: {c.data.metrics["params"] for c in runs} for m, runs in by_model.items()}
    assert all(len(v) == 1 for v in params.values()) and len({v.pop() for v in params.values()}) == 3

    # A trained RRDBNet, through `doe-sr upscale RUN_ID`: the same pixels as its .keras file
    # run directly by Keras on the same LR image.
    import keras

    from PIL import Image

    from doe_sr.sr.images import read_image

    run = by_model["rrdbnet"][0]
    rng = np.random.default_rng(0)
    lr = (rng.random((20, 28, 3)) * 255).astype(np.uint8)
    Image.fromarray(lr).save(tmp_path / "photo.png")
    up = doe_sr("upscale", str(tmp_path / "photo.png"), "--model", run.info.run_id, "--tracking-uri",
                str(tmp_path / "mlruns"), "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
    produced = read_image(next((tmp_path / "out").glob("*.png")))
    from mlflow.tracking import MlflowClient

    local = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}").download_artifacts(
        run.info.run_id, "model/model.keras", str(tmp_path / "dl"))
    model = keras.saving.load_model(local, compile=False)
    direct = np.asarray(model(lr[None].astype(np.float32) / 255.0, training=False))[0]
    expected = np.round(np.clip(direct, 0, 1) * 255).astype(np.uint8)
    assert produced.shape == (80, 112, 3)
    assert np.abs(produced.astype(int) - expected.astype(int)).max() <= 1


def _notebook_study(tmp_path: Path) -> dict:
    (tmp_path / "nets").mkdir(exist_ok=True)
    (tmp_path / "nets" / "user_net.py").write_text(USER_NET)
    return {
        "name": "notebook",
        "design": {"array": "L4(2^3)", "factors": [
            {"name": "model.width", "levels": [4, 8]},
            {"name": "training.learning_rate", "levels": [0.001, 0.0003]}]},
        "data": {"source": "sample", "patch_size": 32, "max_side": 96},
        "model": {"builder": "nets/user_net.py:build", "input": "lr"},
        "training": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2},
        "tracking": {"uri": str(tmp_path / "mlruns")},
    }


def test_a_study_built_in_python_is_validated_and_written_beside_its_builder(tmp_path: Path):
    from doe_sr.study.schema import load_study
    from doe_sr.workflow import open_study

    study = _notebook_study(tmp_path)
    engine = open_study(study, base_dir=tmp_path)
    path = tmp_path / "notebook.study.yaml"
    assert engine.study_path == path and load_study(path).fingerprint() == engine.study.fingerprint()
    stamp = path.stat().st_mtime_ns
    again = open_study(engine.study, base_dir=tmp_path)  # a Study object: the same file, left as it was
    assert again.study.fingerprint() == engine.study.fingerprint() and path.stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="elsewhere/nets/user_net.py not found"):  # builders are found in base_dir
        open_study(study, base_dir=tmp_path / "elsewhere")
    study["model"]["width"] = "wide"
    with pytest.raises(UserError, match="model.width: 'wide' does not fit the builder's annotation"):
        open_study({**study, "design": {**study["design"], "factors": study["design"]["factors"][1:]}},
                   base_dir=tmp_path)


@pytest.mark.slow
def test_a_study_built_in_python_runs_with_two_workers_and_reads_back_as_a_dataframe(tmp_path: Path, monkeypatch):
    """The notebook path: a dict instead of a file, run with two worker processes, analysed,
    results as a DataFrame."""
    from doe_sr.workflow import analyze_study, array_results, open_study, run_study

    monkeypatch.chdir(tmp_path)
    study = _notebook_study(tmp_path)
    engine = open_study(study, base_dir=tmp_path)
    progress = run_study(engine, workers=2, force_workers=True)
    assert progress.done == progress.total == 4
    results = array_results(open_study(study, base_dir=tmp_path))
    assert len(results) == 4 and set(results["model.width"].astype(str)) == {"4", "8"}
    assert results["val_psnr"].notna().all() and (results["params"] > 0).all()
    analyzed = analyze_study(engine, publish=False)
    assert set(analyzed.analysis.sn_response.columns) == {"model.width", "training.learning_rate"}


RAISING = '''
import keras


def raises(*, scale, width: int = 4):
    raise ValueError("width must be even")


def not_a_model(*, scale):
    return "a string"


def l1_times_two(y_true, y_pred):
    return 2.0 * keras.ops.mean(keras.ops.abs(y_true - y_pred), axis=(1, 2, 3))
'''


def test_a_builder_that_raises_or_returns_no_model_is_one_line_naming_it(tmp_path: Path):
    from doe_sr.sr.models.registry import check_model
    from doe_sr.study.models import ModelRun

    (tmp_path / "bad.py").write_text(RAISING)
    raising = ModelRun(name="bad.py:raises", builder="bad.py:raises", input="lr", settings={"width": 3},
                       base_dir=str(tmp_path))
    with pytest.raises(UserError, match=r"model.builder bad.py:raises raised ValueError: width must be even when "
                                        r"built with scale=4, width=3"):
        check_model(raising, 4)
    no_model = raising.model_copy(update={"builder": "bad.py:not_a_model", "name": "bad.py:not_a_model",
                                          "settings": {}})
    with pytest.raises(UserError, match="returned a str, not a Keras model"):
        check_model(no_model, 4)


def test_a_user_loss_trains_a_run(tmp_path: Path):
    """``training.loss: file.py:function`` is what the run is compiled with: twice L1 gives a
    logged loss twice the one plain L1 gives for the same seed and steps."""
    import numpy as np

    from doe_sr.sr.data import Splits, make_pair
    from doe_sr.sr.train import train_run
    from doe_sr.study.schema import parse_study

    (tmp_path / "bad.py").write_text(RAISING)
    rng = np.random.default_rng(0)
    pairs = [make_pair(f"p{i}", (rng.random((64, 64, 3)) * 255).astype(np.uint8), 4) for i in range(3)]
    splits = Splits(train=pairs[:1], val=pairs[1:2], test=pairs[2:], scale=4, source="test")
    losses = {}
    for loss in ("mae", "bad.py:l1_times_two"):
        study = parse_study({"name": "t", "design": {"array": "L4(2^3)", "factors": [
            {"name": "training.learning_rate", "levels": [0.001, 0.0001]}]},
            "data": {"patch_size": 32}, "model": {"name": "edsr", "num_block": 1, "num_feat": 8},
            "training": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "loss": loss}}, base_dir=tmp_path)
        result = train_run(study.run_config({}), splits, patch_size=32, seed=0, workdir=tmp_path / loss[:3],
                           verbose=0)
        losses[loss] = result.history["loss"][0]
    assert losses["bad.py:l1_times_two"] == pytest.approx(2 * losses["mae"], rel=1e-4)
