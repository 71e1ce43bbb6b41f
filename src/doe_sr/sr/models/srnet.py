"""SR-NET: the seed report's U-Net for x4 super-resolution, rebuilt in Keras 3.

The seed network (a common Keras super-resolution autoencoder) takes the bicubic-
upscaled LR image at HR size and predicts the HR image:

* ``depth`` down blocks: ``Conv2D`` with stride 2 (each halves the resolution), batch
  norm on the deeper ones (the seed had none on the first two), then the activation;
  widths ``filters x (1, 1, 2, 4, 4)``, so ``filters=128`` gives the seed's 128-128-256-512-512;
* ``depth`` up blocks: ``Conv2DTranspose`` with stride 2, each concatenated with the down
  block of the same resolution (skip connection); the last one has 3 channels;
* the network input concatenated before the final convolution.

Three deliberate changes from the seed, both options:

* The seed called ``dropout`` on a ``Sequential`` (an attribute, not a layer), so it
  never dropped anything. Here ``dropout > 0`` inserts real ``Dropout`` layers after the
  first two up blocks (as in pix2pix's decoder); the default is 0 (no dropout).
* The seed's last up block had 3 channels: everything the network adds at full
  resolution had to squeeze through 3 activations. Here it has ``head_width`` channels
  (default: ``filters``); ``head_width=3`` is the seed's.
* ``residual=True`` adds the bicubic input to the output and zero-initialises the final
  convolution, so an untrained network *is* bicubic upscaling and training only has to
  learn the missing high frequencies (global residual learning, Kim et al., VDSR, CVPR
  2016). The seed's network, without it, lost to plain bicubic; ``residual=False``
  with ``head_width=3``, restores the seed exactly.
"""

from __future__ import annotations

import keras
from keras import layers

WIDTH_MULTIPLIERS = (1, 1, 2, 4, 4, 8, 8)
FIRST_BATCH_NORM_BLOCK = 2  # the seed used batch norm from the third down block on


def _activation(name: str) -> layers.Layer:
    if name == "leaky_relu":
        return layers.LeakyReLU(negative_slope=0.2)
    return layers.Activation(name)


def build_srnet(
    *,
    filters: int = 64,
    activation: str = "relu",
    depth: int = 5,
    kernel_size: int = 3,
    dropout: float = 0.0,
    residual: bool = True,
    head_width: int | None = None,
    channels: int = 3,
    name: str = "srnet",
    scale: int | None = None,
) -> keras.Model:
    """Build SR-NET for inputs of any size divisible by ``2**depth`` (channels last).

    ``scale`` is accepted because every model of the registry is called with it; SR-NET
    works on the bicubic-upscaled image at HR size, so the scale does not change it.
    """
    inputs = keras.Input(shape=(None, None, channels), name="bicubic")
    widths = [filters * WIDTH_MULTIPLIERS[i] for i in range(depth)]

    x = inputs
    skips = []
    for i, width in enumerate(widths):
        x = layers.Conv2D(width, kernel_size, strides=2, padding="same", name=f"down{i + 1}_conv")(x)
        if i >= FIRST_BATCH_NORM_BLOCK:
            x = layers.BatchNormalization(name=f"down{i + 1}_bn")(x)
        x = _activation(activation)(x)
        skips.append(x)

    # Up path: the deepest skip is x itself; pair each up block with the next shallower skip.
    up_widths = list(reversed(widths[:-1])) + [head_width or filters]
    for i, width in enumerate(up_widths):
        x = layers.Conv2DTranspose(width, kernel_size, strides=2, padding="same", name=f"up{i + 1}_conv")(x)
        if dropout > 0 and i < 2:
            x = layers.Dropout(dropout, name=f"up{i + 1}_dropout")(x)
        x = _activation(activation)(x)
        skip = skips[-(i + 2)] if i + 2 <= len(skips) else inputs
        x = layers.Concatenate(name=f"up{i + 1}_concat")([x, skip])

    final = layers.Conv2D(
        channels, 3, padding="same", name="final_conv",
        kernel_initializer="zeros" if residual else "glorot_uniform",
    )
    outputs = final(x)
    if residual:
        outputs = layers.Add(name="global_residual")([outputs, inputs])
    outputs = layers.Activation("linear", dtype="float32", name="sr")(outputs)
    return keras.Model(inputs, outputs, name=name)


def count_flops(model: keras.Model, height: int, width: int) -> int:
    """Forward FLOPs (2 x multiply-adds) of the convolutions for one HxW input.

    Used by the throughput benchmark to report achieved GFLOP/s; element-wise layers
    (activations, batch norm, concatenation) are a few percent and left out, as FLOP
    counts in papers usually do.
    """
    convs = [l for l in model.layers if isinstance(l, (layers.Conv2D, layers.Conv2DTranspose))]
    probe = keras.Model(model.inputs, [l.output for l in convs])
    shapes = probe.compute_output_shape((1, height, width, model.inputs[0].shape[-1]))
    flops = 0
    for layer, shape in zip(convs, shapes):
        kh, kw = layer.kernel_size
        if isinstance(layer, layers.Conv2DTranspose):
            # kernel (kh, kw, out, in); every input pixel scatters a kh x kw x out patch
            cin = layer.kernel.shape[3]
            macs = (shape[1] // layer.strides[0]) * (shape[2] // layer.strides[1]) * kh * kw * cin * layer.filters
        else:
            cin = layer.kernel.shape[2]
            macs = shape[1] * shape[2] * kh * kw * cin * layer.filters
        flops += 2 * macs
    return int(flops)
