"""A small network of your own: ESPCN (Shi et al., CVPR 2016), for ``studies/byo_model.yaml``.

What doe-sr needs from a network of yours is only this function: it takes ``scale`` and
the settings of the study's ``model:`` section (with each run's factor levels) as
keyword arguments, and returns a Keras model. This one takes the LR image (the study
says ``input: lr``) and upscales it itself with a sub-pixel convolution, so its output
is ``scale`` times its input.

The pixel shuffle is a Keras layer registered as serialisable, so a trained run's
``.keras`` file loads again in ``doe-sr upscale`` and ``doe-sr evaluate --model RUN_ID``
(doe-sr imports this file before loading it).
"""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="examples")
class PixelShuffle(layers.Layer):
    """Rearrange ``scale**2 * C`` channels into a ``scale`` times larger image of ``C`` channels."""

    def __init__(self, scale: int, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, x):
        return ops.depth_to_space(x, self.scale, data_format="channels_last")

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def build(*, scale: int, width: int = 64, depth: int = 2, activation: str = "tanh") -> keras.Model:
    """ESPCN: a 5x5 feature layer, ``depth`` 3x3 layers of ``width`` channels, then a
    sub-pixel convolution to ``scale`` times the input's size.

    The output adds the nearest-neighbour upscaled input, so training starts from a
    sensible image and learns the detail (a global residual, as SR-NET does on bicubic).
    """
    inputs = keras.Input(shape=(None, None, 3), name="lr")
    x = layers.Conv2D(width, 5, padding="same", activation=activation, name="features")(inputs)
    for i in range(depth):
        x = layers.Conv2D(max(width // 2, 8), 3, padding="same", activation=activation, name=f"map{i + 1}")(x)
    x = layers.Conv2D(3 * scale * scale, 3, padding="same", kernel_initializer="zeros", name="subpixel")(x)
    x = PixelShuffle(scale, name="shuffle")(x)
    base = layers.UpSampling2D(scale, interpolation="nearest", name="nearest")(inputs)
    outputs = layers.Add(name="residual")([x, base])
    outputs = layers.Activation("linear", dtype="float32", name="sr")(outputs)
    return keras.Model(inputs, outputs, name="espcn")
