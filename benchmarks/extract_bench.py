"""Extraction: VGG16 to block5_conv3, images/s by batch size and precision, and the matmul limit.

The limit is the fastest large matrix multiply the machine does in the same precision: a
square product keeps every core's vector units busy with hardly any memory traffic. It is
measured in a fresh process without ``OPENBLAS_CORETYPE`` (see ``worker.py``), so numpy gets
the fastest OpenBLAS kernel for the CPU.
"""

from __future__ import annotations

import keras
import numpy as np
from common import interleaved, log, summary
from fidelity import LAYER

from snowflake_tools import features


def build_extractor(image_size: int, precision: str) -> keras.Model:
    """VGG16 with random weights (the FLOPs of ImageNet's), cut at ``block5_conv3``."""
    model, _ = features.load_vgg16(None, image_size, precision=precision)
    return features.cut_at_layer(model, LAYER)


def conv_gflop_per_image(model: keras.Model) -> float:
    """Work of one image through the convolutions: sum of 2 H W C_in C_out k_h k_w, in GFLOP."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            k_h, k_w, c_in, c_out = layer.kernel.shape
            _, height, width, _ = layer.output.shape
            total += 2 * height * width * c_in * c_out * k_h * k_w
    return total / 1e9


def matmul_candidates(size: int) -> dict[str, tuple[str, float, object]]:
    """Matrix products: ``{name: (precision, GFLOP per call, call)}``.

    Two shapes: square ``size``, and ``12 size x 512`` by ``512 x 512`` like VGG16's deeper
    convolutions. A 1 x 1 convolution over m pixels is the same product, run by oneDNN's
    convolution kernels, which use this CPU's bfloat16 units better than its MatMul may. Last,
    VGG16's block4 convolution itself (3 x 3, 512 to 512 channels at 28 x 28), which oneDNN
    runs as one blocked product with a 4,608-long inner dimension: often the fastest of all.
    """
    import tensorflow as tf

    rng = np.random.default_rng(0)
    square = rng.random((size, size), dtype=np.float32)
    candidates = {f"numpy @, {size}^3": ("float32", 2 * size**3 / 1e9, lambda: square @ square)}
    for m, k, n in ((size, size, size), (12 * size, 512, 512)):
        first, second = rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)
        for precision in ("float32", "bfloat16"):
            a, b = tf.constant(first, precision), tf.constant(second, precision)
            x, w = tf.reshape(a, (1, m, 1, k)), tf.reshape(b, (1, 1, k, n))
            products = {
                "tf.linalg.matmul": lambda a=a, b=b: tf.linalg.matmul(a, b).numpy(),
                "1 x 1 tf.nn.conv2d": lambda x=x, w=w: tf.nn.conv2d(x, w, 1, "VALID").numpy(),
            }
            gflop, shape = 2 * m * k * n / 1e9, f"{m} x {k} x {n}, {precision}"
            for name, call in products.items():
                candidates[f"{name}, {shape}"] = (precision, gflop, call)
    batch = max(1, size // 128)
    pixels = rng.random((batch, 28, 28, 512), dtype=np.float32)
    kernel = rng.random((3, 3, 512, 512), dtype=np.float32)
    for precision in ("float32", "bfloat16"):
        x, w = tf.constant(pixels, precision), tf.constant(kernel, precision)
        candidates[f"3 x 3 tf.nn.conv2d, VGG16 block4, batch {batch}, {precision}"] = (
            precision,
            2 * batch * 28 * 28 * 512 * 512 * 9 / 1e9,
            lambda x=x, w=w: tf.nn.conv2d(x, w, 1, "SAME").numpy(),
        )
    return candidates


def bench_matmul(size: int, rounds: int) -> dict[str, dict]:
    """GFLOP/s of each candidate's fastest call (a limit is what the machine *can* do)."""
    candidates = matmul_candidates(size)
    calls = {name: call for name, (_, _, call) in candidates.items()}
    for call in calls.values():
        call()  # warm-up: kernel selection, allocation
    times = interleaved(calls, rounds)
    return {
        name: {"precision": precision, "gflops": gflop / min(times[name])}
        for name, (precision, gflop, _) in candidates.items()
    }


def bench_extraction(image_size: int, batch_sizes: tuple[int, ...], rounds: int) -> dict:
    """Images/s of ``features.run_model`` per precision and batch size, taking turns.

    Precisions: float32 and what ``"auto"`` picks here (measured once when it is float32).
    """
    auto = features.resolve_precision(features.AUTO)
    precisions = dict.fromkeys([features.FLOAT32, auto])  # once each, in this order
    calls = {}
    for precision in precisions:
        model = build_extractor(image_size, precision)
        for batch in batch_sizes:
            shape = (batch, image_size, image_size, 3)
            pixels = np.random.default_rng(batch).uniform(0, 255, shape).astype(np.float32)
            calls[precision, batch] = lambda m=model, p=pixels: features.run_model(m, p)
    log(f"extraction: {', '.join(precisions)} x batch {batch_sizes}, {rounds} rounds")
    for call in calls.values():
        call()  # warm-up: tracing, kernel selection
    times = interleaved(calls, rounds)
    return {
        "auto": auto,
        "gflop_per_image": conv_gflop_per_image(model),
        "runs": [
            {"precision": precision, "batch": batch, **summary(seconds)}
            for (precision, batch), seconds in times.items()
        ],
    }
