"""Extraction: VGG16 images per second and GFLOP/s against the machine's matrix-multiply rate.

The matrix-multiply rate is this machine's practical limit for float32 arithmetic: a large
square product keeps every core's vector units busy with hardly any memory traffic. A network
whose convolutions ran as well would reach the same GFLOP/s; the ratio says how close
extraction gets. Everything here runs in the calling process unless a setting needs a fresh
one (see ``worker.py``).
"""

from __future__ import annotations

import ctypes
import glob
import os
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from common import interleaved_best, log
from keras.applications import vgg16

from snowflake_tools import features

#: The layer the tutorial cuts VGG16 at.
LAYER = "block5_conv3"

#: The one variant that is not float32: Keras computes in bfloat16, keeps weights in float32.
BFLOAT16 = "Keras mixed_bfloat16 policy (not float32)"


def build_extractor(image_size: int) -> keras.Model:
    """VGG16 with random weights cut at ``block5_conv3``, as notebook 02 builds it offline.

    Random weights cost exactly the FLOPs of the ImageNet ones and need no download.
    """
    model, _ = features.load_vgg16(None, image_size)
    return features.cut_at_layer(model, LAYER)


def conv_gflop_per_image(model: keras.Model) -> float:
    """Floating-point work of one image through ``model``'s convolutions, in GFLOP.

    Each ``Conv2D`` costs ``2 * H_out * W_out * C_in * C_out * k_h * k_w`` (a multiply and an
    add per weight per output pixel); biases, ReLUs and pooling add well under 1 %.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            k_h, k_w, c_in, c_out = layer.kernel.shape
            shape = layer.output.shape
            height, width = (
                (shape[2], shape[3])
                if layer.data_format == "channels_first"
                else (
                    shape[1],
                    shape[2],
                )
            )
            total += 2 * height * width * c_in * c_out * k_h * k_w
    return total / 1e9


def tf_matmul(size: int) -> tuple[Callable[[], object], float]:
    """A float32 ``tf.linalg.matmul`` of two ``size x size`` matrices, and its GFLOP."""
    first = tf.random.normal((size, size), seed=1)
    second = tf.random.normal((size, size), seed=2)
    return (lambda: tf.linalg.matmul(first, second).numpy()), 2 * size**3 / 1e9


def numpy_matmul(size: int) -> tuple[Callable[[], object], float]:
    """A float32 numpy ``@`` of two ``size x size`` matrices, and its GFLOP."""
    rng = np.random.default_rng(0)
    first = rng.random((size, size), dtype=np.float32)
    second = rng.random((size, size), dtype=np.float32)
    return (lambda: first @ second), 2 * size**3 / 1e9


def numpy_blas_kernel() -> str:
    """Which OpenBLAS kernel numpy runs on this CPU (e.g. ``SkylakeX``), or ``""``.

    Asked of the OpenBLAS library that numpy ships, without extra packages. The kernel decides
    numpy's matrix-multiply speed; ``OPENBLAS_CORETYPE`` can force an older, slower one.
    """
    pattern = os.path.join(os.path.dirname(np.__file__) + ".libs", "*openblas*.so*")
    for path in glob.glob(pattern):
        library = ctypes.CDLL(path)
        for name in ("scipy_openblas_get_corename64_", "openblas_get_corename64_"):
            if hasattr(library, name):
                function = getattr(library, name)
                function.restype = ctypes.c_char_p
                return function().decode()
    return ""


def pixels_batch(batch_size: int, image_size: int) -> np.ndarray:
    """Random RGB pixels, float32 0-255, shape ``(batch, size, size, 3)``."""
    rng = np.random.default_rng(batch_size)
    return rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype(np.float32)


def project_runs(model: keras.Model, image_size: int, batch_sizes: list[int]) -> dict:
    """``features.run_model`` (the project's path) on one batch of each size.

    Returns ``{batch size: (call, images per call)}`` for :func:`common.interleaved_best`.
    """
    runs = {}
    for batch_size in batch_sizes:
        pixels = pixels_batch(batch_size, image_size)
        runs[batch_size] = ((lambda p=pixels: features.run_model(model, p)), batch_size)
    return runs


def _with_keras_config(
    build: Callable[[], keras.Model], data_format: str = "channels_last", policy: str = "float32"
) -> keras.Model:
    """Build a model under a Keras data format and dtype policy, then restore the defaults."""
    keras.config.set_image_data_format(data_format)
    keras.mixed_precision.set_global_policy(policy)
    try:
        return build()
    finally:
        keras.config.set_image_data_format("channels_last")
        keras.mixed_precision.set_global_policy("float32")


def _copy_of(model: keras.Model, image_size: int, data_format: str, policy: str) -> keras.Model:
    """The same network and weights as ``model``, built with another layout or precision."""
    shape = (3, image_size, image_size) if data_format == "channels_first" else None

    def build() -> keras.Model:
        base = vgg16.VGG16(
            weights=None, include_top=False, input_shape=shape or (image_size, image_size, 3)
        )
        copy = keras.Model(base.input, base.get_layer(LAYER).output)
        copy.set_weights(model.get_weights())
        return copy

    return _with_keras_config(build, data_format, policy)


def in_process_variants(model: keras.Model, image_size: int, batch_size: int) -> dict:
    """Other ways to run the same network and weights in this process, on one batch.

    Returns ``{setting: (call, images per call)}``, and the median relative error of each
    variant's features against ``run_model``'s under ``"relative_error"`` where the outputs
    are comparable (same layout).
    """
    pixels = pixels_batch(batch_size, image_size)
    reference = features.run_model(model, pixels)

    compiled = tf.function(lambda batch: model(batch, training=False), jit_compile=True)

    def run_xla() -> np.ndarray:
        return np.asarray(compiled(vgg16.preprocess_input(pixels.copy())))

    nchw = _copy_of(model, image_size, "channels_first", "float32")
    nchw_pixels = vgg16.preprocess_input(pixels.copy()).transpose(0, 3, 1, 2).copy()

    def run_nchw() -> np.ndarray:
        return np.asarray(nchw.predict_on_batch(nchw_pixels))

    bf16 = _copy_of(model, image_size, "channels_last", "mixed_bfloat16")

    def run_bf16() -> np.ndarray:
        return features.run_model(bf16, pixels)

    runs = {
        "XLA: tf.function(jit_compile=True)": run_xla,
        "channels_first (NCHW) layout": run_nchw,
        BFLOAT16: run_bf16,
    }
    usable, errors = {}, {}
    for setting, run in runs.items():
        try:
            run()  # a layout this TensorFlow build cannot run on a CPU fails here
            usable[setting] = (run, batch_size)
        except Exception as error:
            errors[setting] = f"{type(error).__name__}: {str(error)[:120]}"
    relative_error = {}
    if BFLOAT16 in usable:
        relative_error[BFLOAT16] = _relative_error(run_bf16(), reference)
    if "XLA: tf.function(jit_compile=True)" in usable:
        relative_error["XLA: tf.function(jit_compile=True)"] = _relative_error(run_xla(), reference)
    return {"runs": usable, "errors": errors, "relative_error": relative_error}


def _relative_error(values: np.ndarray, reference: np.ndarray) -> float:
    """Median over rows of the relative L2 error of ``values`` against ``reference``."""
    values = values.reshape(len(values), -1).astype(np.float64)
    reference = reference.reshape(len(reference), -1).astype(np.float64)
    error = np.linalg.norm(values - reference, axis=1) / np.linalg.norm(reference, axis=1)
    return float(np.median(error))


def side_by_side(
    model: keras.Model,
    image_size: int,
    batch_sizes: list[int],
    settings_batch: int,
    matmul_size: int,
    rounds: int,
    variants: bool = True,
) -> dict:
    """Matrix multiplies, the batch-size sweep and the variants, timed taking turns.

    Returns ``matmul`` (GFLOP/s by library), ``sweep`` (seconds per image by batch size),
    ``variants`` (seconds per image by setting), ``errors`` and ``relative_error``.
    """
    tf_call, tf_gflop = tf_matmul(matmul_size)
    numpy_call, numpy_gflop = numpy_matmul(matmul_size)
    project = project_runs(model, image_size, batch_sizes)
    others = (
        in_process_variants(model, image_size, settings_batch)
        if variants
        else {"runs": {}, "errors": {}, "relative_error": {}}
    )
    candidates = {"tf_float32": tf_call, "numpy_float32": numpy_call}
    candidates |= {f"batch {size}": call for size, (call, _) in project.items()}
    candidates |= {setting: call for setting, (call, _) in others["runs"].items()}
    # short calls get several tries per turn, so that each has its chances at a quiet moment
    calls_per_round = {"tf_float32": 3, "numpy_float32": 3}
    calls_per_round |= {f"batch {size}": max(1, 8 // size) for size in project}
    log(f"extraction: {len(candidates)} candidates taking turns, {rounds} rounds")
    best = interleaved_best(candidates, rounds, calls_per_round)
    return {
        "matmul": {
            "tf_float32": tf_gflop / best["tf_float32"],
            "numpy_float32": numpy_gflop / best["numpy_float32"],
        },
        "sweep": {
            str(size): best[f"batch {size}"] / images for size, (_, images) in project.items()
        },
        "variants": {
            setting: best[setting] / images for setting, (_, images) in others["runs"].items()
        },
        "errors": others["errors"],
        "relative_error": others["relative_error"],
    }
