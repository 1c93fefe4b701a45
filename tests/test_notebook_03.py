"""Notebook 03 end to end with papermill: a small crafted folder, random weights, tiny images."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import papermill as pm
import pytest
from helpers import precision_used
from PIL import Image

from snowflake_tools import features

pytestmark = pytest.mark.slow

NOTEBOOK = "03_how_robust_is_uniqueness.ipynb"
N_FLAKES = 8  # readable images in the folder, an exact duplicate pair among them
N_SAMPLE = 5  # flakes whose variants are measured

DESIGN, GAP, POOLED = "flat L2 (design)", "GAP cosine", "rotation-pooled"


def make_folder(folder, make_image):
    """Seven synthetic crystals, an exact copy of one, and a file that is not an image."""
    folder.mkdir()
    for seed in range(7):
        (folder / f"flake{seed}.png").write_bytes(make_image(seed, (72, 64), "PNG"))
    shutil.copy(folder / "flake3.png", folder / "flake3_again.png")
    (folder / "broken.jpg").write_bytes(b"<html>404 Not Found</html>")
    return folder


@pytest.fixture
def run(run_notebook, tmp_path):
    """Run notebook 03 on ``image_dir`` with random weights, 32-pixel images, few variants."""

    def run_on(image_dir, **parameters):
        results = tmp_path / "results"
        settings = dict(
            IMAGE_DIR=str(image_dir),
            RESULTS_DIR=str(results),
            CACHE_DIR=str(tmp_path / "cache"),
            WEIGHTS=None,
            IMAGE_SIZE=32,
            BATCH_SIZE=8,
            ANGLES=[90],
            POOL_ANGLES=[0, 90, 180, 270],  # exact quarter turns: copies turned by 90 match
            K_NEIGHBOURS=2,
            TOP_N=3,
            POSE_DRAWS=3,
            SAMPLE_SIZE=N_SAMPLE,
        )
        run_notebook(NOTEBOOK, **(settings | parameters))
        return results

    return run_on


def test_measures_robustness_and_writes_every_table_and_figure(run, tmp_path, make_image):
    image_dir = make_folder(tmp_path / "flakes", make_image)
    # Every top pair a close call: where "auto" chose bfloat16, the run goes on in float32,
    # so the fallback and everything after it are exercised (notebook 02's test checks the
    # fallback's ranking against a float32 run)
    results = run(image_dir, CLOSE_CALL_MARGIN=1e9)

    summary = pd.read_csv(results / "self_retrieval.csv")
    assert list(summary.columns) == [
        "method",
        "variant",
        "recall_at_1",
        "median_rank",
        "n_variants",
    ]
    assert list(dict.fromkeys(summary["method"])) == [DESIGN, GAP, POOLED]
    assert list(dict.fromkeys(summary["variant"])) == [
        "rotated 90°", "mirrored", "JPEG q=75", "all variants",
    ]  # fmt: skip
    assert summary["recall_at_1"].between(0, 1).all() and (summary["median_rank"] >= 1).all()
    by_variant = summary.set_index(["method", "variant"])
    assert by_variant.loc[(DESIGN, "rotated 90°"), "n_variants"] == N_SAMPLE
    assert by_variant.loc[(DESIGN, "all variants"), "n_variants"] == 3 * N_SAMPLE
    # Pooling over quarter turns makes a quarter-turned variant's features its original's.
    assert by_variant.loc[(POOLED, "rotated 90°"), "recall_at_1"] == 1.0

    rankings = pd.read_csv(results / "rankings.csv", keep_default_na=False)
    assert len(rankings) == 3 * 2 * N_FLAKES
    assert "broken.jpg" not in set(rankings["file"])
    for (method, score), ranking in rankings.groupby(["method", "score"]):
        assert score in ("1-NN", "2-NN")
        assert ranking["rank"].tolist() == list(range(1, N_FLAKES + 1))
        assert ranking["distance"].is_monotonic_decreasing
        assert (ranking["nearest_file"] != ranking["file"]).all()
        pair = ranking.set_index("file").loc[["flake3.png", "flake3_again.png"]]
        assert pair["duplicates"].tolist() == [1, 1], (method, score)
        assert "flake3" not in " ".join(pair["nearest_file"]), (method, score)

    overlap = pd.read_csv(results / "top_overlap.csv").set_index("ranking")
    assert overlap.shape == (6, 6) and (overlap.to_numpy().diagonal() == 3).all()
    assert overlap.index[0] == f"{DESIGN} · 1-NN"
    stability = pd.read_csv(results / "pose_stability.csv")
    assert len(stability) == 6
    assert stability[["top_n_kept", "winner_kept"]].stack().between(0, 1).all()

    for figure in ("variants.png", "self_retrieval.png", "most_unique_robust.png"):
        assert Image.open(results / figure).size[0] > 300
    assert len(list((results / "variants").glob("*.png"))) == 4  # the original and 3 variants

    record = json.loads((results / "run.json").read_text())
    assert record["weights_mode"] == features.RANDOM and record["demo"]
    assert record["precision"] == precision_used(record) == features.FLOAT32
    assert record["n_images"] == N_FLAKES and record["n_skipped"] == 1
    # Every original at the 3 other pooling turns (the unturned maps come from the cache),
    # and the sampled flakes' 3 variants at all 4 turns
    assert record["sampled_flakes"] == N_SAMPLE
    assert record["forward_passes"] == N_FLAKES * 3 + N_SAMPLE * 3 * 4
    assert set(record["recall_at_1"]) == {DESIGN, GAP, POOLED}
    assert record["most_robust_method"] in record["recall_at_1"]
    assert record["best_winner"] in set(rankings["file"])


def test_a_bad_parameter_is_a_clear_error_before_any_work(run, tmp_path, make_image):
    image_dir = make_folder(tmp_path / "flakes", make_image)
    with pytest.raises(pm.PapermillExecutionError, match="POOLING = 'median' is not allowed"):
        run(image_dir, POOLING="median")
    assert not (tmp_path / "cache").exists()  # stopped before extracting anything


def test_missing_image_folder_says_to_run_notebook_01(run, tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="01_download_snowflakes.ipynb"):
        run(tmp_path / "nowhere")
