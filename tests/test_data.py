"""Splits and the patch pipeline: deterministic disjoint splits, aligned and augmented
patches (found again in the source images, not trusted), the disk cache, the memory guard."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np

from conftest import dihedral
import pytest

from doe_sr.sr import data
from doe_sr.sr.data import Pair, load_splits, make_pair, patch_dataset, split_indices
from doe_sr.core.errors import UserError
from doe_sr.sr.resize import imresize
from doe_sr.study.schema import DataConfig


def _noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    # Noise: every patch occurs once in its image, so a patch can be located unambiguously.
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _folder(tmp_path: Path, n: int = 5, size: tuple[int, int] = (72, 88), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = tmp_path / "hr"
    folder.mkdir()
    for i in range(n):
        iio.imwrite(folder / f"img{i:02d}.png", _noise(rng, *size))
    return folder




def _locate(patch: np.ndarray, images: list[np.ndarray]) -> tuple[int, int, int, int] | None:
    """(image, transform, top, left) where ``patch`` occurs exactly, by brute force."""
    p = patch.shape[0]
    for i, img in enumerate(images):
        for t, view in enumerate(dihedral(img)):
            windows = np.lib.stride_tricks.sliding_window_view(view, (p, p, 3))[:, :, 0]
            hits = np.argwhere((windows == patch).all(axis=(2, 3, 4)))
            if len(hits):
                return i, t, int(hits[0][0]), int(hits[0][1])
    return None


def _patches(pairs: list[Pair], *, batches: int, **kw) -> tuple[np.ndarray, np.ndarray]:
    ds = patch_dataset(pairs, **kw)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds.take(batches)])
    to8 = lambda a: np.round(np.concatenate(a) * 255).astype(np.uint8)  # noqa: E731
    return to8(xs), to8(ys)


# -- splits ------------------------------------------------------------------------------
def test_split_is_deterministic_disjoint_and_complete():
    a = split_indices(900, (8, 1, 1), seed=3)
    assert a == split_indices(900, (8, 1, 1), seed=3)
    assert a != split_indices(900, (8, 1, 1), seed=4)
    train, val, test = map(set, a)
    assert (len(train), len(val), len(test)) == (720, 90, 90)
    assert not (train & val or train & test or val & test)
    assert train | val | test == set(range(900))


def test_split_needs_three_images():
    with pytest.raises(UserError, match="at least 3"):
        split_indices(2, (8, 1, 1), seed=0)


def test_folder_splits_are_reproducible_and_match_files(tmp_path):
    folder = _folder(tmp_path, n=6)
    cfg = DataConfig(source=str(folder), split=(4, 1, 1), seed=1)
    first, second = load_splits(cfg), load_splits(cfg)
    assert first.summary() == second.summary()
    names = [p.name for p in first.train + first.val + first.test]
    assert sorted(names) == [f"img{i:02d}" for i in range(6)]
    pair = first.train[0]
    hr = iio.imread(folder / f"{pair.name}.png")
    np.testing.assert_array_equal(pair.hr, hr)  # 72x88 is a multiple of 4: nothing cropped
    np.testing.assert_array_equal(pair.lr, imresize(hr, 0.25))
    np.testing.assert_array_equal(pair.bicubic, imresize(imresize(hr, 0.25), 4.0))
    assert first.lr_origin == "bicubic"


def test_div2k_protocol_needs_a_div2k_folder(tmp_path):
    with pytest.raises(UserError, match="protocol: div2k"):
        load_splits(DataConfig(source=str(_folder(tmp_path)), protocol="div2k"))


def test_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_splits(DataConfig(source=str(tmp_path / "nope")))


def test_a_file_as_source_is_called_a_file(tmp_path):
    path = tmp_path / "passwd"  # as `source: /etc/passwd` (issue 9, item 10)
    path.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(UserError, match=r"passwd is a file, not a folder; point it at the folder"):
        load_splits(DataConfig(source=str(path)))
    with pytest.raises(UserError, match=r"lr_source: .*passwd is a file, not a folder"):
        load_splits(DataConfig(source=str(_folder(tmp_path, n=3)), lr_source=str(path)))


def test_a_tiny_image_reports_its_own_size():
    # The crop to a multiple of the scale made a 1x1 image "too small (0x0)" (issue 9, item 10).
    with pytest.raises(UserError, match=r"image x is 1x1, too small for x4 \(it needs at least 16x16"):
        make_pair("x", np.zeros((1, 1, 3), np.uint8), 4)
    with pytest.raises(UserError, match=r"image y is 15x40, too small for x4"):
        make_pair("y", np.zeros((40, 15, 3), np.uint8), 4)


# -- pairs -------------------------------------------------------------------------------
def test_official_lr_of_rounded_up_size_is_accepted_and_aligned():
    rng = np.random.default_rng(1)
    hr = _noise(rng, 70, 82)  # not multiples of 4: MATLAB's LR is ceil(70/4) x ceil(82/4)
    lr = imresize(hr, 0.25)
    assert lr.shape[:2] == (18, 21)
    pair = make_pair("x", hr, 4, lr=lr)
    assert pair.hr.shape[:2] == (68, 80) and pair.lr.shape[:2] == (17, 20)
    np.testing.assert_array_equal(pair.lr, lr[:17, :20])
    with pytest.raises(UserError, match="expected 20x17"):
        make_pair("x", hr, 4, lr=lr[:10])


def test_memory_cache_refuses_a_set_larger_than_free_ram(tmp_path, monkeypatch):
    folder = _folder(tmp_path, n=3)
    monkeypatch.setattr(data, "MEMORY_SHARE", 1e-9)
    with pytest.raises(UserError, match="cache: disk"):
        load_splits(DataConfig(source=str(folder)))


def test_disk_cache_round_trip_and_invalidation(tmp_path):
    folder = _folder(tmp_path, n=4)
    cache = tmp_path / "cache"
    mem = load_splits(DataConfig(source=str(folder), split=(2, 1, 1)))
    disk = load_splits(DataConfig(source=str(folder), split=(2, 1, 1), cache="disk"), cache_dir=cache)
    assert len(list(cache.glob("*.lr.npy"))) == 4 and len(list(cache.glob("*.npy"))) == 8
    for a, b in zip(mem.train + mem.val + mem.test, disk.train + disk.val + disk.test):
        assert a.name == b.name and b.path is not None
        assert isinstance(b.hr, np.memmap)
        for attr in ("hr", "lr", "bicubic"):
            np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr))
    # A second load memory-maps the same files; a changed image gets a new entry.
    again = load_splits(DataConfig(source=str(folder), split=(2, 1, 1), cache="disk"), cache_dir=cache)
    assert [p.path for p in again.train] == [p.path for p in disk.train]
    changed = _noise(np.random.default_rng(9), 72, 88)
    iio.imwrite(folder / "img00.png", changed)
    after = load_splits(DataConfig(source=str(folder), split=(2, 1, 1), cache="disk"), cache_dir=cache)
    new = next(p for p in after.train + after.val + after.test if p.name == "img00")
    np.testing.assert_array_equal(new.hr, changed)
    assert len(list(cache.glob("*.lr.npy"))) == 5


def test_corrupt_cache_file_is_a_user_error(tmp_path):
    folder = _folder(tmp_path, n=3)
    cache = tmp_path / "cache"
    cfg = DataConfig(source=str(folder), cache="disk")
    load_splits(cfg, cache_dir=cache)
    victim = next(p for p in cache.glob("*.npy") if not p.name.endswith(".lr.npy"))
    victim.write_bytes(b"not an array")
    with pytest.raises(UserError, match="delete it"):
        load_splits(cfg, cache_dir=cache)


# -- patches -----------------------------------------------------------------------------
@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_patches_are_aligned_crops_of_the_pairs(tmp_path, cache):
    folder = _folder(tmp_path, n=4, size=(48, 64))
    sp = load_splits(DataConfig(source=str(folder), split=(2, 1, 1), cache=cache), cache_dir=tmp_path / "c")
    pairs = sp.train + sp.val
    x, y = _patches(pairs, batches=4, patch_size=16, batch_size=6, seed=0, augment=True, patches_per_read=3,
                    shuffle_buffer=8)
    assert x.shape == y.shape == (24, 16, 16, 3)
    hrs = [np.asarray(p.hr) for p in pairs]
    transforms = set()
    for xi, yi in zip(x, y):
        where = _locate(yi, hrs)
        assert where is not None, "an HR patch is not a crop of any (flipped/rotated) HR image"
        i, t, top, left = where
        transforms.add(t)
        # The input patch must be the bicubic image at the same place, under the same transform.
        expected = dihedral(np.asarray(pairs[i].bicubic))[t][top:top + 16, left:left + 16]
        np.testing.assert_array_equal(xi, expected)
    assert len(transforms) >= 3, f"augmentation used only transforms {transforms}"


def test_lr_patch_region_matches_downscaled_hr_patch(tmp_path):
    """Away from its border, MATLAB's x1/4 of an HR patch at a multiple-of-4 offset equals
    the image's LR over that region: pixels, LR and bicubic input describe the same place."""
    folder = _folder(tmp_path, n=3, size=(96, 96))
    pair = load_splits(DataConfig(source=str(folder), split=(1, 1, 1))).train[0]
    top, left, p = 32, 16, 48
    region = imresize(np.asarray(pair.hr)[top:top + p, left:left + p], 0.25)
    lr = np.asarray(pair.lr)[top // 4:(top + p) // 4, left // 4:(left + p) // 4]
    inner = slice(2, -2)  # the antialiased kernel spans 2 LR pixels on each side
    np.testing.assert_array_equal(region[inner, inner], lr[inner, inner])
    np.testing.assert_array_equal(pair.bicubic, imresize(np.asarray(pair.lr), 4.0))


def test_without_augmentation_patches_are_upright(tmp_path):
    folder = _folder(tmp_path, n=3, size=(40, 40))
    pairs = load_splits(DataConfig(source=str(folder), split=(1, 1, 1))).train
    _, y = _patches(pairs, batches=2, patch_size=16, batch_size=4, seed=1, augment=False)
    hrs = [np.asarray(p.hr) for p in pairs]
    assert {_locate(yi, hrs)[1] for yi in y} == {0}


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_pipeline_is_reproducible_for_a_seed(tmp_path, cache):
    folder = _folder(tmp_path, n=3, size=(40, 48))
    pairs = load_splits(DataConfig(source=str(folder), split=(1, 1, 1), cache=cache),
                        cache_dir=tmp_path / "c").train
    kw = dict(batches=2, patch_size=16, batch_size=4, patches_per_read=2, shuffle_buffer=4)
    a, b, c = (_patches(pairs, seed=s, **kw)[1] for s in (5, 5, 6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_patch_larger_than_every_image_is_a_user_error(tmp_path):
    pairs = load_splits(DataConfig(source=str(_folder(tmp_path, n=3, size=(32, 32))), split=(1, 1, 1))).train
    with pytest.raises(UserError, match="patch_size"):
        patch_dataset(pairs, patch_size=64, batch_size=2, seed=0)
