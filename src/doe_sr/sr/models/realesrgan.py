"""Real-ESRGAN x4plus as a Keras network, built from the weights `doe_sr.sr.weights.ncnn` reads.

Why here and not beside the reader: ``sr.weights`` only turn foreign files into numpy
arrays (no Keras, so they can be tested and imported without TensorFlow); building and
loading networks is the job of ``sr.models``. The network is BasicSR's RRDBNet, the
same Keras graph as ESRGAN (`doe_sr.sr.models.esrgan.build_rrdbnet`).
"""

from __future__ import annotations

import keras

from doe_sr.sr.models.esrgan import KerasUpscaler, build_rrdbnet, load_state_dict
from doe_sr.sr.weights.ncnn import X4PLUS_GEOMETRY, realesrgan_x4plus_state_dict


def load_realesrgan_x4plus() -> keras.Model:
    """A Keras RRDBNet (`doe_sr.sr.models.esrgan.build_rrdbnet`) holding Real-ESRGAN x4plus.

    Same contract as the ncnn graph: RGB in [0, 1], channels-last, x4, unclipped.
    """
    model = build_rrdbnet(**X4PLUS_GEOMETRY, scale=4, name="realesrgan_x4plus")
    load_state_dict(model, realesrgan_x4plus_state_dict())
    return model


def realesrgan_upscaler(
    *,
    tile: int = 128,
    overlap: int = 16,
    batch: int = 4,
    label: str = "Real-ESRGAN x4plus",
    jit: bool = False,
) -> KerasUpscaler:
    """Real-ESRGAN x4plus as a `KerasUpscaler` (tiled, clipped to [0, 1]), from local files only.

    The defaults are those of `doe_sr.sr.models.esrgan.esrgan_upscaler`, so the two
    baselines are run the same way in comparisons.
    """
    return KerasUpscaler(load_realesrgan_x4plus(), name=label, scale=4, tile=tile, overlap=overlap,
                         batch=batch, jit=jit)
