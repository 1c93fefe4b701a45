"""VGG16 features: the weights, the model cut at a layer, extraction in batches, a disk cache
(notebook 02).

The notebook shows the ideas (a pretrained network cut at a convolutional layer, one feature
vector per image); this module adds what a real run needs: a weights fallback for machines
without internet, bounded memory, progress, and a cache so that a re-run skips the network.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from keras.applications import vgg16
from tqdm.auto import tqdm

from snowflake_tools import files, images, parameters, runinfo

#: Weights modes recorded in run.json and stamped on figures.
IMAGENET, RANDOM = "imagenet", "random"
#: Seed of the random weights (``WEIGHTS = None``, or "auto" offline).
SEED = 0
#: The ImageNet weights of VGG16 without its classifier, as ``keras.applications`` fetches them.
IMAGENET_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_URL = f"https://storage.googleapis.com/tensorflow/keras-applications/vgg16/{IMAGENET_FILE}"
IMAGENET_MD5 = "6d6bbae143d832006294945121d1f1fc"

#: Precisions of the network's arithmetic (PRECISION in the notebooks). Features always come
#: out as float32 rows; bfloat16 keeps float32's range but only 8 bits of mantissa (about 3
#: significant digits) inside the network, and runs several times faster where the CPU
#: multiplies bfloat16 in hardware.
FLOAT32, BFLOAT16, AUTO = "float32", "bfloat16", "auto"
PRECISIONS = (FLOAT32, BFLOAT16, AUTO)
_KERAS_POLICY = {FLOAT32: "float32", BFLOAT16: "mixed_bfloat16"}  # weights stay float32
_BFLOAT16_FLAGS = {"amx_bf16", "avx512_bf16"}  # CPU flags of native bfloat16 arithmetic
_CPUINFO = Path("/proc/cpuinfo")
#: Bytes of the header ``np.save`` writes before a feature row.
_NPY_HEADER_BYTES = 128
#: Disk space is handed out in blocks: a cache entry takes whole blocks of this size.
_DISK_BLOCK_BYTES = 4096

_BANNER = """
{line}
  DEMO MODE: the ImageNet weights could not be loaded ({reason}).
  VGG16 runs with RANDOM weights: the pipeline works end to end, but the ranking
  says little about snowflakes. Every figure is stamped DEMO.
  For the real thing: run once with internet (WEIGHTS = "imagenet"), or set WEIGHTS
  to the path of vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5.
{line}"""


def load_vgg16(weights: str | None, image_size: int = 224, seed: int = SEED, precision: str = AUTO):
    """VGG16 without its classifier, and the weights mode actually used.

    :func:`resolve_weights` then :func:`build_vgg16`, the two calls notebook 02 makes in
    step 2. Returns ``(model, mode)`` where mode is ``"imagenet"``, ``"random"`` or
    ``"file:<name>"``.
    """
    weights, mode = resolve_weights(weights)
    return build_vgg16(weights, image_size, precision, seed), mode


def resolve_weights(weights: str | None) -> tuple[str | None, str]:
    """The ``weights`` argument for ``keras.applications.VGG16``, and the weights mode to record.

    Args:
        weights: ``"imagenet"`` (downloaded once by Keras, about 58 MB, then cached in
            ``~/.keras/models``), a path to a Keras weights file (for machines without
            internet), ``None`` for random weights, or ``"auto"``: ImageNet when it can be had,
            random otherwise, with a loud banner.

    Returns:
        ``(argument, mode)``: ``("imagenet", "imagenet")``, ``(None, "random")`` or
        ``(path, "file:<name>")``. An argument passed in again resolves to itself.
    """
    if weights is None:
        return None, RANDOM
    if weights in (IMAGENET, "auto"):
        try:
            _fetch_imagenet_weights()
            return IMAGENET, IMAGENET
        except Exception as error:  # no internet, a proxy, a broken download...
            if weights == IMAGENET:
                raise RuntimeError(
                    "Could not load the ImageNet weights for VGG16 "
                    f"({type(error).__name__}: {error}). Without internet, set WEIGHTS to the "
                    'path of a weights file, or to "auto" or None for random weights.'
                ) from error
            print(_BANNER.format(line="!" * 78, reason=f"{type(error).__name__}: {error}"))
            return None, RANDOM
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f'WEIGHTS = {weights!r} is not a file. Use "imagenet", "auto", None, or the path '
            f"of {IMAGENET_FILE}."
        )
    return str(path), f"file:{path.name}"


def _fetch_imagenet_weights() -> str:
    """Download the file ``VGG16(weights="imagenet", include_top=False)`` loads, once.

    Keras keeps it in ``~/.keras/models``, where ``VGG16`` finds it (same name, same hash).
    """
    return keras.utils.get_file(
        IMAGENET_FILE, IMAGENET_URL, cache_subdir="models", file_hash=IMAGENET_MD5
    )


def build_vgg16(
    weights: str | None, image_size: int, precision: str = AUTO, seed: int = SEED
) -> keras.Model:
    """VGG16 without its classifier, computing in ``precision`` (notebook 02, step 2).

    ``weights`` is what :func:`resolve_weights` returned. Random weights are drawn from
    ``seed``: the same weights every run, in either precision, so cached features stay valid.
    """
    if image_size < parameters.MIN_IMAGE_SIZE:
        raise ValueError(
            f"IMAGE_SIZE must be at least {parameters.MIN_IMAGE_SIZE} pixels for VGG16, "
            f"got {image_size}."
        )
    if weights is None:
        keras.utils.set_random_seed(seed)
    with precision_policy(precision):
        return keras.applications.VGG16(
            include_top=False, weights=weights, input_shape=(image_size, image_size, 3)
        )


@contextlib.contextmanager
def precision_policy(precision: str):
    """Layers built inside this block compute in ``precision`` (:func:`resolve_precision`).

    The Keras mixed-precision policy is read by every layer as it is built; ``mixed_bfloat16``
    keeps the weights in float32 and computes in bfloat16. The previous policy comes back
    afterwards, so later models are not affected.
    """
    policy = _KERAS_POLICY[resolve_precision(precision)]
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def resolve_precision(precision: str) -> str:
    """The precision a run will use: ``"float32"`` or ``"bfloat16"``.

    ``"auto"`` picks bfloat16 where it is both faster and faithful: on a CPU that multiplies
    bfloat16 in hardware (Linux reports ``amx_bf16`` or ``avx512_bf16`` in ``/proc/cpuinfo``),
    or on a GPU TensorFlow can see that has bfloat16 tensor cores (compute capability 8.0 or
    more). Anywhere else, and whenever it cannot tell, float32: emulated bfloat16 is slower.
    """
    if precision not in PRECISIONS:
        raise ValueError(
            f"PRECISION = {precision!r} is not one of {', '.join(map(repr, PRECISIONS))}. "
            'Use "auto" unless you want to compare the two.'
        )
    if precision != AUTO:
        return precision
    return BFLOAT16 if _gpu_has_bfloat16() or _cpu_has_bfloat16() else FLOAT32


def _cpu_has_bfloat16() -> bool:
    """Whether the CPU flags (Linux only) include native bfloat16 arithmetic."""
    try:
        text = _CPUINFO.read_text()
    except OSError:  # not Linux, or no permission: unsure, so no
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return bool(_BFLOAT16_FLAGS & set(flags.partition(":")[2].split()))


def _gpu_has_bfloat16() -> bool:
    """Whether every GPU TensorFlow sees has bfloat16 tensor cores (NVIDIA Ampere or newer)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return False
    capabilities = [
        tf.config.experimental.get_device_details(gpu).get("compute_capability") for gpu in gpus
    ]
    return all(capability and capability >= (8, 0) for capability in capabilities)


def precision_of(model: keras.Model) -> str:
    """The precision ``model`` computes in, as :func:`load_vgg16` set it: record it in run.json."""
    computes = {layer.compute_dtype for layer in model.layers}
    return BFLOAT16 if "bfloat16" in computes else FLOAT32


def cut_at_layer(model: keras.Model, layer: str) -> keras.Model:
    """``model`` from its input up to the layer named ``layer`` (notebook 02, step 2)."""
    check_layer(model, layer)
    return keras.Model(model.input, model.get_layer(layer).output, name=f"{model.name}_{layer}")


def check_layer(model: keras.Model, layer: str) -> None:
    """ValueError, listing the layers there are (convolutional first), if ``layer`` is not one."""
    names = [item.name for item in model.layers]
    if layer not in names:
        convolutional = [name for name in names if "conv" in name]
        others = [name for name in names if "conv" not in name]
        raise ValueError(
            f"{model.name} has no layer {layer!r}. Convolutional layers: "
            f"{', '.join(convolutional)}. Others: {', '.join(others)}."
        )


def fingerprint(model: keras.Model) -> str:
    """A short hash of the model's architecture and weights: part of every cache key.

    Two random initialisations, or a different weights file, give different fingerprints, so
    features computed by one model are never served for another. The precision is not in it
    (the same seed gives the same weights in either): :func:`cache_folder` adds it.
    """
    digest = hashlib.blake2b(digest_size=8)
    for layer in model.layers:
        if not isinstance(layer, keras.layers.InputLayer):  # input names are numbered per session
            digest.update(f"{type(layer).__name__}:{layer.name}:{layer.output.shape};".encode())
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


@dataclasses.dataclass
class Extraction:
    """What :func:`extract_features` returns.

    Attributes:
        features: float32 array ``(n_loaded, n_values)``, one flattened feature map per image.
        paths: the images behind the rows of ``features``, in the same order.
        skipped: DataFrame ``file, reason`` of images that could not be read.
        n_cached: how many rows came from the cache instead of the network.
        seconds: wall time of the whole extraction.
    """

    features: np.ndarray
    paths: list[Path]
    skipped: pd.DataFrame
    n_cached: int
    seconds: float

    def summary(self) -> str:
        """One line: the matrix, its size, and where its rows came from."""
        return (
            f"features: {self.features.shape} ({self.features.nbytes / 2**20:,.0f} MiB), "
            f"{self.n_cached} from the cache, {len(self.skipped)} skipped, {self.seconds:.1f} s"
        )


def cache_folder(cache_dir: str | os.PathLike, model: keras.Model, image_size: int) -> Path:
    """Where features of this model (architecture, weights, layer, precision) and size live."""
    name = f"{model.name}-{image_size}px-{precision_of(model)}-{fingerprint(model)}"
    return Path(cache_dir) / name


def extract_features(
    model: keras.Model,
    paths: Sequence[str | os.PathLike],
    batch_size: int = 16,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Extraction:
    """Run every image through ``model`` and flatten each output into one row.

    Images are decoded one batch at a time, so memory holds the feature matrix plus one batch
    of pixels, never all the pixels at once. With ``cache_dir``, each image's features are
    stored under the SHA-256 of its file, inside a folder named after the model's weights and
    the image size: a re-run reads them back instead of running the network, and an edited
    image is recomputed. Unreadable images are skipped and listed, never fatal. A disk too
    full for the cache stops the run with :class:`files.DiskFullError` (where, how much),
    before the first batch when the free space is already short.
    """
    started = time.perf_counter()
    image_size = int(model.input.shape[1])
    n_values = int(np.prod(model.output.shape[1:]))
    folder = cache_folder(cache_dir, model, image_size) if cache_dir is not None else None
    paths = [Path(path) for path in paths]
    features = np.empty((len(paths), n_values), dtype=np.float32)
    skipped: list[dict] = []
    failed_rows: list[int] = []
    pending: list[tuple[int, Path, str]] = []  # (row, path, sha256) still to compute
    n_cached = 0
    for row, path in enumerate(paths):
        try:
            key = files.sha256_file(path) if folder is not None else ""
        except OSError as error:  # vanished since it was listed, a folder, no permission...
            skipped.append({"file": str(path), "reason": f"cannot be read ({error})"})
            failed_rows.append(row)
            continue
        cached = _read_cached(folder, key, n_values)
        if cached is not None:
            features[row] = cached
            n_cached += 1
        else:
            pending.append((row, path, key))

    needed = len(pending) * cache_entry_bytes(n_values)
    what = f"the feature cache of {len(pending)} images"
    if folder is not None and pending:
        files.check_free_space(folder, needed, what)  # before any work, not half way
    bar = tqdm(total=len(pending), desc="Extracting features", unit="img", disable=not progress)
    with files.explain_full_disk(folder or ".", needed, what):
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            pixels, loaded = _load_batch(batch, image_size, skipped, failed_rows)
            if loaded:
                outputs = run_model(model, pixels)
                for (row, _, key), values in zip(loaded, outputs, strict=True):
                    features[row] = values
                    _write_cached(folder, key, values)
            bar.update(len(batch))
    bar.close()

    keep = np.setdiff1d(np.arange(len(paths)), failed_rows)
    if failed_rows:
        features = features[keep]  # copies only when something was skipped
    return Extraction(
        features=features,
        paths=[paths[row] for row in keep],
        skipped=pd.DataFrame(skipped, columns=["file", "reason"]),
        n_cached=n_cached,
        seconds=time.perf_counter() - started,
    )


def cache_entry_bytes(n_values: int) -> int:
    """Disk space one image's cached features take: ``n_values`` float32, a header, whole blocks."""
    return math.ceil((4 * n_values + _NPY_HEADER_BYTES) / _DISK_BLOCK_BYTES) * _DISK_BLOCK_BYTES


def run_model(model: keras.Model, pixels: np.ndarray) -> np.ndarray:
    """Features of a batch of RGB pixels: ``(n, size, size, 3)`` in, ``(n, n_values)`` out.

    Applies VGG16's ``preprocess_input`` (RGB to BGR, minus the ImageNet mean colour) and
    flattens each feature map into one float32 row. Use it for pixels that are not files,
    such as rotated copies; :func:`extract_features` uses it for every batch.
    """
    outputs = model.predict_on_batch(vgg16.preprocess_input(np.array(pixels, dtype=np.float32)))
    return np.asarray(outputs, dtype=np.float32).reshape(len(pixels), -1)


def _load_batch(batch, image_size, skipped, failed_rows):
    """Decode one batch; unreadable images go to ``skipped`` and ``failed_rows``."""
    pixels, loaded = [], []
    for row, path, key in batch:
        try:
            pixels.append(images.load_image(path, image_size))
            loaded.append((row, path, key))
        except images.UnreadableImageError as error:
            skipped.append({"file": str(path), "reason": str(error.__cause__ or error)})
            failed_rows.append(row)
    return (np.stack(pixels) if pixels else None), loaded


def _read_cached(folder: Path | None, key: str, n_values: int) -> np.ndarray | None:
    """Cached features for one image, or None when absent or unusable."""
    if folder is None:
        return None
    path = folder / f"{key}.npy"
    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return values if values.shape == (n_values,) and values.dtype == np.float32 else None


def _write_cached(folder: Path | None, key: str, values: np.ndarray) -> None:
    """Store one image's features atomically (a crash never leaves a broken entry)."""
    if folder is None:
        return
    with files.atomic_path(folder / f"{key}.npy") as temporary:
        with open(temporary, "wb") as handle:
            np.save(handle, values, allow_pickle=False)


def choose_weights(
    weights: str | None, image_dir: str | os.PathLike
) -> tuple[str | None, str, str]:
    """``(argument, weights_mode, demo)`` for ``WEIGHTS``, and one line saying what they are.

    ``argument`` is what ``keras.applications.VGG16`` takes (see
    :func:`resolve_weights`: ``"auto"`` becomes ``"imagenet"`` when the download works,
    else None, random); ``weights_mode`` goes into run.json; ``demo`` says why the run is a demo
    ("" when it is not), for stamping figures.
    """
    argument, weights_mode = resolve_weights(weights)
    demo = runinfo.demo_reason(weights_mode, image_dir)
    print(
        f"weights: {weights_mode}"
        + (f"; DEMO run ({demo}): figures are stamped DEMO." if demo else "")
    )
    return argument, weights_mode, demo


def load_extractor(
    weights: str | None,
    image_size: int,
    layer: str,
    image_dir: str | os.PathLike,
    precision: str = AUTO,
) -> tuple[keras.Model, str, str]:
    """VGG16 cut at ``layer``: ``(extractor, weights_mode, demo)``, built as in notebook 02, step 2.

    ``precision`` is the network's arithmetic (:data:`PRECISIONS`);
    :func:`precision_of` tells which one it got.
    """
    argument, weights_mode, demo = choose_weights(weights, image_dir)
    extractor = cut_at_layer(build_vgg16(argument, image_size, precision), layer)
    precision = precision_of(extractor)
    print(f"precision: {precision}; {layer} output shape: {extractor.output.shape}")
    return extractor, weights_mode, demo


def check_settings(
    weights: object,
    image_size: object,
    precision: object,
    close_call_margin: object,
    batch_size: object,
) -> None:
    """Check ``WEIGHTS``, ``IMAGE_SIZE``, ``PRECISION``, ``CLOSE_CALL_MARGIN`` and
    ``BATCH_SIZE``: how notebooks 02 to 05 build and run VGG16, under those names."""
    parameters.weights("WEIGHTS", weights)
    parameters.image_size("IMAGE_SIZE", image_size)
    parameters.one_of("PRECISION", precision, PRECISIONS)
    parameters.number("CLOSE_CALL_MARGIN", close_call_margin, minimum=0)
    parameters.whole_number("BATCH_SIZE", batch_size, minimum=1)


def check_enough_readable(n_readable: int, n_skipped: int, image_dir: str | os.PathLike) -> None:
    """ValueError when fewer than two images could be read: there is nothing to compare."""
    if n_readable < 2:
        raise ValueError(
            f"Only {n_readable} readable image(s) in {image_dir} ({n_skipped} could not be "
            "read): need at least 2 to compare. Run 01_download_snowflakes.ipynb again, or add "
            "images."
        )


def readable_flakes(extraction: Extraction, image_dir: str | os.PathLike) -> list[str]:
    """Names, relative to ``image_dir``, of the images behind the rows of ``extraction``.

    Raises ValueError when fewer than two images could be read (:func:`check_enough_readable`).
    """
    names = [Path(path).relative_to(image_dir).as_posix() for path in extraction.paths]
    check_enough_readable(len(names), len(extraction.skipped), image_dir)
    return names
