"""SR-NET: shapes, the seed's widths, the global residual, FLOP count."""

from __future__ import annotations

import numpy as np
import pytest

from doe_sr.sr.models.srnet import build_srnet, count_flops


@pytest.mark.parametrize("h, w", [(32, 32), (64, 96)])
def test_output_has_the_input_shape(h, w):
    model = build_srnet(filters=4, activation="elu")
    x = np.random.default_rng(0).random((2, h, w, 3), dtype=np.float32)
    assert tuple(model(x).shape) == (2, h, w, 3)


def test_seed_widths_and_batch_norm_placement():
    model = build_srnet(filters=128, head_width=3, residual=False)
    convs = {l.name: l.filters for l in model.layers if l.name.endswith("_conv")}
    assert [convs[f"down{i}_conv"] for i in range(1, 6)] == [128, 128, 256, 512, 512]
    assert [convs[f"up{i}_conv"] for i in range(1, 6)] == [512, 256, 128, 128, 3]
    bns = [l.name for l in model.layers if "bn" in l.name]
    assert bns == ["down3_bn", "down4_bn", "down5_bn"]
    assert not any("dropout" in l.name for l in model.layers)


def test_untrained_residual_network_is_bicubic():
    # The zero-initialised final conv makes output == input: training starts from bicubic.
    model = build_srnet(filters=4, residual=True)
    x = np.random.default_rng(1).random((1, 64, 64, 3), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(model(x, training=False)), x, atol=1e-6)


def test_dropout_is_real_layers():
    model = build_srnet(filters=4, dropout=0.3)
    assert [l.name for l in model.layers if "dropout" in l.name] == ["up1_dropout", "up2_dropout"]


def test_flop_count_by_hand_for_a_one_block_net():
    model = build_srnet(filters=2, depth=1, kernel_size=3, residual=False, head_width=3)
    # down1: 16x16 out, 3x3x3->2; up1: 16x16 in -> 32x32, 3x3, 2->3; final: 32x32, 3x3, (3+3)->3
    expected = 2 * (16 * 16 * 9 * 3 * 2 + 16 * 16 * 9 * 2 * 3 + 32 * 32 * 9 * 6 * 3)
    assert count_flops(model, 32, 32) == expected
