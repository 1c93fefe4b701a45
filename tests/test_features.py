"""Feature extraction with a small random VGG16: shapes, cache, skipped files, bad settings."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from snowflake_tools import features, images

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
    real = features.vgg16.VGG16

    def vgg16_without_internet(*args, weights=None, **kwargs):
        if weights == "imagenet":
            raise ConnectionError("URL fetch failure: no route to host")
        return real(*args, weights=weights, **kwargs)

    monkeypatch.setattr(features.vgg16, "VGG16", vgg16_without_internet)


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
