"""Serializable Keras layers shared by the built-in SR networks.

Registered under the ``doe_sr`` package, so a model saved with ``model.save("x.keras")``
loads back with ``keras.saving.load_model(path, compile=False)`` as long as this module
has been imported (importing any built-in network imports it).
"""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="doe_sr")
class PixelShuffle(keras.layers.Layer):
    """Sub-pixel upsampling (Shi et al., ESPCN, CVPR 2016): (H, W, C*r*r) -> (rH, rW, C).

    Implemented with ``keras.ops.depth_to_space`` (TensorFlow's native kernel, channels
    last) because it is a single fast op on every backend. Its channel order is NOT
    PyTorch's ``nn.PixelShuffle``: for output pixel (h*r+i, w*r+j) and channel c,
    ``depth_to_space`` reads input channel ``(i*r + j)*C + c`` while PyTorch reads
    ``c*r*r + i*r + j``. The two differ only by a fixed permutation of the channels the
    preceding convolution produces, so networks trained here are the same function class
    with the same parameters; to load PyTorch weights, permute that conv's output channels
    with :func:`torch_to_keras_channels` (tests/test_models_builtin.py checks this against
    ``torch.nn.functional.pixel_shuffle``).
    """

    def __init__(self, factor: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.factor = int(factor)

    def call(self, x: Any) -> Any:
        return keras.ops.depth_to_space(x, self.factor, data_format="channels_last")

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        n, h, w, c = input_shape
        r = self.factor
        return (n, None if h is None else h * r, None if w is None else w * r, c // (r * r))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": self.factor}


def torch_to_keras_channels(channels: int, factor: int) -> list[int]:
    """Index list ``p`` such that Keras channel k of a conv feeding `PixelShuffle` is
    PyTorch channel ``p[k]`` of the same conv feeding ``nn.PixelShuffle(factor)``.

    Use it on a ported conv: ``kernel[..., p]`` and ``bias[p]`` (HWIO kernel).
    """
    r2 = factor * factor
    c_out = channels // r2
    # Keras channel (i*r + j)*C + c  <-  PyTorch channel c*r*r + i*r + j
    return [c * r2 + s for s in range(r2) for c in range(c_out)]
