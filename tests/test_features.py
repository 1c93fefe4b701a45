"""Feature extraction with a small random VGG16: shapes, cache, skipped files, bad settings."""

from __future__ import annotations

import errno

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from snowflake_tools import features, files, images

SIZE = 32  # the smallest input VGG16 takes: block5_conv3 is then 2 x 2 x 512


@pytest.fixture(scope="module")
def extractor():
    model, mode = features.load_vgg16(None, SIZE)
    assert mode == features.RANDOM
    return features.cut_at_layer(model, "block5_conv3")


@pytest.fixture
def flakes(tmp_path):
    rng = np.random.default_rng(3)
    paths = []
    for i in range(5):
        pixels = rng.integers(0, 255, size=(48, 40, 3), dtype=np.uint8)
        paths.append(tmp_path / f"flake{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def test_random_weights_are_reproducible_for_a_seed():
    first, _ = features.load_vgg16(None, SIZE, seed=1)
    second, _ = features.load_vgg16(None, SIZE, seed=1)
    other, _ = features.load_vgg16(None, SIZE, seed=2)
    assert features.fingerprint(first) == features.fingerprint(second)
    assert features.fingerprint(first) != features.fingerprint(other)


def test_unknown_layer_lists_the_valid_ones(extractor):
    model, _ = features.load_vgg16(None, SIZE)
    with pytest.raises(ValueError, match="no layer 'block9_conv1'.*block5_conv3"):
        features.cut_at_layer(model, "block9_conv1")


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a file.*imagenet"):
        features.load_vgg16(str(tmp_path / "missing.h5"), SIZE)


def test_too_small_image_size_is_refused():
    with pytest.raises(ValueError, match="at least 32"):
        features.load_vgg16(None, 16)


def test_extract_shapes_order_and_batches_agree(extractor, flakes):
    result = features.extract_features(extractor, flakes, batch_size=2, progress=False)
    assert result.features.shape == (5, 2 * 2 * 512)
    assert result.features.dtype == np.float32
    assert result.paths == flakes
    assert result.skipped.empty and result.n_cached == 0
    assert result.summary().startswith("features: (5, 2048) (0 MiB), 0 from the cache, 0 skipped")
    one_batch = features.extract_features(extractor, flakes, batch_size=8, progress=False)
    np.testing.assert_allclose(result.features, one_batch.features, rtol=1e-4, atol=1e-4)


def test_unreadable_image_is_skipped_and_listed(extractor, flakes):
    flakes[2].write_bytes(b"<html>404</html>")
    result = features.extract_features(extractor, flakes, batch_size=2, progress=False)
    assert result.paths == flakes[:2] + flakes[3:]
    assert result.features.shape[0] == 4
    assert result.skipped["file"].tolist() == [str(flakes[2])]
    assert "cannot identify image file" in result.skipped.loc[0, "reason"]


def test_cache_is_reused_and_follows_content(extractor, flakes, tmp_path):
    cache = tmp_path / "cache"
    first = features.extract_features(extractor, flakes, cache_dir=cache, progress=False)
    again = features.extract_features(extractor, flakes, cache_dir=cache, progress=False)
    assert first.n_cached == 0 and again.n_cached == 5
    np.testing.assert_array_equal(first.features, again.features)
    # Changing one image recomputes exactly that one.
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(flakes[1])
    changed = features.extract_features(extractor, flakes, cache_dir=cache, progress=False)
    assert changed.n_cached == 4
    assert not np.allclose(changed.features[1], first.features[1])
    assert not list(cache.rglob("*.part"))


def test_cache_is_keyed_by_weights(flakes, tmp_path):
    cache = tmp_path / "cache"
    for seed in (1, 2):
        model, _ = features.load_vgg16(None, SIZE, seed=seed)
        extractor = features.cut_at_layer(model, "block5_conv3")
        result = features.extract_features(extractor, flakes[:2], cache_dir=cache, progress=False)
        assert result.n_cached == 0
    assert len(list(cache.iterdir())) == 2


def test_corrupt_cache_entry_is_recomputed(extractor, flakes, tmp_path):
    cache = tmp_path / "cache"
    features.extract_features(extractor, flakes[:1], cache_dir=cache, progress=False)
    (entry,) = cache.rglob("*.npy")
    entry.write_bytes(b"garbage")
    result = features.extract_features(extractor, flakes[:1], cache_dir=cache, progress=False)
    assert result.n_cached == 0


@pytest.fixture
def offline(monkeypatch):
    """Make the ImageNet download fail the way it does without internet."""

    def download_without_internet(*args, **kwargs):
        raise ConnectionError("URL fetch failure: no route to host")

    monkeypatch.setattr(features.keras.utils, "get_file", download_without_internet)


def test_auto_falls_back_to_random_weights_with_a_banner(offline, capsys):
    _, mode = features.load_vgg16("auto", SIZE)
    assert mode == features.RANDOM
    assert "DEMO MODE" in capsys.readouterr().out


def test_imagenet_without_internet_says_what_to_do(offline):
    with pytest.raises(RuntimeError, match="Without internet.*path of a weights file"):
        features.load_vgg16("imagenet", SIZE)


def test_run_model_matches_extract_features_and_leaves_input_alone(extractor, flakes):
    pixels = np.stack([images.load_image(path, SIZE) for path in flakes[:3]])
    before = pixels.copy()
    direct = features.run_model(extractor, pixels)
    extracted = features.extract_features(extractor, flakes[:3], progress=False).features
    np.testing.assert_allclose(direct, extracted, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(pixels, before)  # preprocess_input must not edit in place


# --- Precision ----------------------------------------------------------------------------


@pytest.fixture
def cpu_flags(monkeypatch, tmp_path):
    """Pretend the CPU has the given flags (a fake /proc/cpuinfo) and no GPU is visible."""

    def pretend(*flags: str) -> None:
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 avx2 {' '.join(flags)}\n\n")
        monkeypatch.setattr(features, "_CPUINFO", cpuinfo)

    monkeypatch.setattr(features, "_gpu_has_bfloat16", lambda: False)
    return pretend


@pytest.mark.parametrize(
    ("flags", "expected"),
    [(("amx_bf16", "amx_tile"), "bfloat16"), (("avx512_bf16",), "bfloat16"), ((), "float32")],
)
def test_auto_precision_follows_the_cpu_flags(cpu_flags, flags, expected):
    cpu_flags(*flags)
    assert features.resolve_precision("auto") == expected


def test_auto_precision_is_float32_when_the_cpu_cannot_be_read(cpu_flags, monkeypatch, tmp_path):
    monkeypatch.setattr(features, "_CPUINFO", tmp_path / "no-such-file")
    assert features.resolve_precision("auto") == "float32"


def test_explicit_precisions_are_kept_and_others_refused(cpu_flags):
    cpu_flags()
    assert features.resolve_precision("bfloat16") == "bfloat16"
    assert features.resolve_precision("float32") == "float32"
    with pytest.raises(ValueError, match="'float16' is not one of 'float32', 'bfloat16', 'auto'"):
        features.resolve_precision("float16")


def test_bfloat16_model_has_the_same_weights_and_leaves_the_global_policy_alone(flakes):
    keras = features.keras
    keras.mixed_precision.set_global_policy("float16")  # a user's own setting must survive
    try:
        half, _ = features.load_vgg16(None, SIZE, seed=1, precision="bfloat16")
        assert keras.mixed_precision.global_policy().name == "float16"
        with pytest.raises(FileNotFoundError):
            features.load_vgg16("/no/such/weights.h5", SIZE, precision="bfloat16")
        assert keras.mixed_precision.global_policy().name == "float16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    full, _ = features.load_vgg16(None, SIZE, seed=1, precision="float32")
    assert features.precision_of(half) == "bfloat16"
    assert features.precision_of(features.cut_at_layer(half, "block5_conv3")) == "bfloat16"
    assert features.precision_of(full) == "float32"
    for first, second in zip(half.get_weights(), full.get_weights(), strict=True):
        np.testing.assert_array_equal(first, second)


def test_bfloat16_extraction_gives_float32_rows_close_to_float32_ones(flakes, tmp_path):
    rows = {}
    for precision in ("bfloat16", "float32"):
        model, _ = features.load_vgg16(None, SIZE, seed=1, precision=precision)
        extractor = features.cut_at_layer(model, "block5_conv3")
        rows[precision] = features.extract_features(
            extractor, flakes, cache_dir=tmp_path / "cache", progress=False
        )
        assert rows[precision].n_cached == 0  # the precision is part of the cache key
        assert rows[precision].features.dtype == np.float32
    half, full = rows["bfloat16"].features, rows["float32"].features
    assert not np.array_equal(half, full)
    relative = np.linalg.norm(half - full, axis=1) / np.linalg.norm(full, axis=1)
    assert relative.max() < 0.05
    assert sorted(path.name.split("-")[2] for path in (tmp_path / "cache").iterdir()) == [
        "bfloat16",
        "float32",
    ]


def short_write(handle, values, **kwargs):
    """``np.save`` on a full disk: part of the entry written, then numpy's errno-less error."""
    handle.write(b"\x93NUMPY" + bytes(100))
    raise OSError("8192 requested and 992 written")


def no_space(handle, values, **kwargs):
    """``np.save`` on a full disk as the operating system reports it."""
    handle.write(b"\x93NUMPY")
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("full_disk_save", [short_write, no_space])
def test_full_disk_while_caching_says_where_and_how_much(
    extractor, flakes, tmp_path, monkeypatch, full_disk_save
):
    cache = tmp_path / "cache"
    monkeypatch.setattr(np, "save", full_disk_save)
    with pytest.raises(files.DiskFullError) as caught:
        features.extract_features(extractor, flakes, cache_dir=cache, progress=False)
    message = str(caught.value)
    assert "is full" in message and str(cache.resolve()) in message
    needed = 5 * features.cache_entry_bytes(2 * 2 * 512)  # known before the first batch
    assert f"needs about {needed / 1024:,.1f} KiB" in message
    assert caught.value.errno == errno.ENOSPC
    assert [path for path in cache.rglob("*") if path.is_file()] == []  # nothing half-written


def test_too_little_free_space_stops_before_any_work(extractor, flakes, tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_free_bytes", lambda folder: 1000)
    ran = []
    monkeypatch.setattr(features, "run_model", lambda *args: ran.append(args))
    with pytest.raises(files.DiskFullError, match=r"is full: the feature cache of 5 images needs"):
        features.extract_features(extractor, flakes, cache_dir=tmp_path / "cache", progress=False)
    assert ran == [] and not (tmp_path / "cache").exists()


def extraction_of(paths, n_skipped):
    return features.Extraction(
        features=np.zeros((len(paths), 3), dtype=np.float32),
        paths=list(paths),
        skipped=pd.DataFrame({"file": ["bad"] * n_skipped, "reason": ["broken"] * n_skipped}),
        n_cached=0,
        seconds=0.0,
    )


def test_readable_flakes_are_named_relative_to_the_image_folder(tmp_path):
    paths = [tmp_path / "b.png", tmp_path / "sub" / "a.png"]
    assert features.readable_flakes(extraction_of(paths, 1), tmp_path) == ["b.png", "sub/a.png"]


@pytest.mark.parametrize("n_readable", [0, 1])
def test_fewer_than_two_readable_images_is_a_clear_error(tmp_path, n_readable):
    extraction = extraction_of([tmp_path / "a.png"][:n_readable], 3)
    message = f"Only {n_readable} readable image.*3 could not be read.*at least 2"
    with pytest.raises(ValueError, match=message):
        features.readable_flakes(extraction, tmp_path)


def test_load_extractor_cuts_vgg16_and_says_it_is_a_demo(tmp_path, capsys):
    extractor, weights_mode, demo = features.load_extractor(None, 32, "block4_conv3", tmp_path)
    assert tuple(extractor.output.shape[1:]) == (4, 4, 512)
    assert weights_mode == features.RANDOM and "random" in demo
    assert "DEMO run" in capsys.readouterr().out


@pytest.mark.parametrize("precision", [features.FLOAT32, features.BFLOAT16])
def test_load_extractor_builds_the_precision_asked_for(tmp_path, precision, capsys):
    extractor, _, _ = features.load_extractor(None, 32, "block5_conv3", tmp_path, precision)
    assert features.precision_of(extractor) == precision
    assert f"precision: {precision}" in capsys.readouterr().out
