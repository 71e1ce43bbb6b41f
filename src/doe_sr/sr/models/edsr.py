"""EDSR-baseline (Lim et al., "Enhanced Deep Residual Networks for Single Image
Super-Resolution", CVPR Workshops 2017) in Keras, channels last, as BasicSR builds it
(``basicsr/archs/edsr_arch.py``).

Post-upsampling: the network takes the LR image and outputs the x``scale`` image.

* ``conv_first`` 3x3 to ``num_feat`` channels;
* ``num_block`` residual blocks conv-ReLU-conv WITHOUT batch norm (the paper's main
  point: batch norm normalises away the range flexibility SR needs and costs memory),
  the branch scaled by ``res_scale`` before the addition (1.0 for the baseline; the
  paper's large model uses 0.1 to keep 32 wide blocks stable);
* ``conv_body`` then a global skip from ``conv_first``;
* sub-pixel upsampling: for x2/x4/x8 ``log2(scale)`` times (conv to ``4*num_feat``,
  pixel shuffle 2), for x3 once (conv to ``9*num_feat``, pixel shuffle 3);
* ``conv_last`` to RGB, then a float32 ``linear`` layer named ``sr`` so that under a
  ``mixed_bfloat16``/``mixed_float16`` policy the output (and the loss) stay float32.

Mean shift dropped: EDSR subtracts the DIV2K RGB mean from 0-255 inputs (and adds it
back at the end) to centre them. doe-sr feeds [0, 1] images, where the mean is ~0.45
and the first conv's bias absorbs any offset; with the global skip taken after
``conv_first`` (not from the input) the shift changes nothing the network cannot learn
with one bias, so it would only add two layers. Parameter count is unchanged (the shift
has none): 1,517,571 for x4 with 16 blocks of 64 features, BasicSR's EDSR-baseline x4.
"""

from __future__ import annotations

import keras
from keras import layers

from doe_sr.core.errors import UserError
from doe_sr.sr.models.layers import PixelShuffle

SCALES = (2, 3, 4, 8)


def _conv(filters: int, name: str) -> layers.Conv2D:
    return layers.Conv2D(filters, 3, padding="same", name=name)


def build_edsr(
    *,
    scale: int = 4,
    num_block: int = 16,
    num_feat: int = 64,
    res_scale: float = 1.0,
    name: str = "edsr",
) -> keras.Model:
    """EDSR(-baseline by default): RGB LR in [0, 1] of any size -> RGB x``scale`` (not clipped)."""
    if scale not in SCALES:
        raise UserError(f"EDSR scale {scale} is not supported; use one of {', '.join(map(str, SCALES))}")
    if num_block < 0 or num_feat < 1:
        raise UserError(f"EDSR needs num_block >= 0 and num_feat >= 1, got {num_block} and {num_feat}")
    inp = keras.Input(shape=(None, None, 3), name="lr")
    feat = _conv(num_feat, "conv_first")(inp)
    body = feat
    for n in range(num_block):
        branch = _conv(num_feat, f"body.{n}.conv1")(body)
        branch = layers.ReLU(name=f"body.{n}.relu")(branch)
        branch = _conv(num_feat, f"body.{n}.conv2")(branch)
        if res_scale != 1.0:
            branch = layers.Rescaling(res_scale, name=f"body.{n}.scale")(branch)
        body = layers.Add(name=f"body.{n}.add")([body, branch])
    body = _conv(num_feat, "conv_body")(body)
    feat = layers.Add(name="global_skip")([feat, body])
    steps = [3] if scale == 3 else [2] * (scale.bit_length() - 1)
    for k, r in enumerate(steps):
        feat = _conv(num_feat * r * r, f"upsample.{k}.conv")(feat)
        feat = PixelShuffle(r, name=f"upsample.{k}.shuffle")(feat)
    out = _conv(3, "conv_last")(feat)
    out = layers.Activation("linear", dtype="float32", name="sr")(out)
    return keras.Model(inp, out, name=name)
