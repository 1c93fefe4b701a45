"""The report: self-contained (no network references), every flake once, neighbours right."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from bs4 import BeautifulSoup
from helpers import table_files
from PIL import Image

from snowflake_tools import atlas, report, search


def make_flakes(folder, n_clusters=3, per_cluster=5, width=24, seed=0):
    """Images, features (two exact copies of row 0, one near-duplicate pair), ranking, pairs."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (n_clusters, width))
    features = np.repeat(centres, per_cluster, axis=0)
    features = features + rng.normal(0, 1, features.shape)
    features = np.vstack([features, features[[0, 0]]]).astype(np.float32)
    features[2] = features[1] + 1e-3
    names = [f"flake {i:02d}.png" for i in range(len(features))]
    for name in names:
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(folder / name)
    ranking = search.rank_uniqueness(search.nearest_distinct_neighbours(features), names)
    return features, names, ranking, search.find_near_duplicates(ranking)


@pytest.fixture
def flakes(tmp_path):
    folder = tmp_path / "flakes"
    folder.mkdir()
    return (*make_flakes(folder), folder)


def write(tmp_path, flakes, **overrides):
    features, names, ranking, near, folder = flakes
    arguments = dict(
        features=features,
        flake_files=names,
        ranking=ranking,
        near_duplicates=near,
        image_dir=folder,
        positions=atlas.layout(features),
        run={"weights_mode": "random", "demo": "random VGG16 weights", "layer": "block5_conv3"},
    )
    arguments.update(overrides)
    path = report.write_report(tmp_path / "out" / "report.html", **arguments)
    return path.read_text(encoding="utf-8")


def test_every_ranked_file_appears_once_in_the_table_by_rank(tmp_path, flakes):
    page = write(tmp_path, flakes)
    ranking = flakes[2]
    assert table_files(page) == ranking["file"].tolist()


def test_page_references_nothing_on_the_network(tmp_path, flakes):
    soup = BeautifulSoup(write(tmp_path, flakes), "html.parser")
    assert soup.find("link") is None and not soup.find_all("script", src=True)
    for element in soup.find_all(True):
        for attribute in ("src", "href", "srcset", "poster", "data", "action"):
            value = str(element.get(attribute, ""))
            assert not re.match(r"\s*(https?:)?//", value, re.I), (element.name, value[:80])
    for style in soup.find_all("style"):
        assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//", style.get_text(), re.I)
    assert "DEMO run (random VGG16 weights)" in soup.get_text()


def test_pictures_are_small_embedded_jpegs(tmp_path, flakes):
    soup = BeautifulSoup(write(tmp_path, flakes), "html.parser")
    pictures = soup.find_all("img")
    assert len(pictures) == 3 * 6 + 2 * len(flakes[3])  # top 3 with 5 neighbours, pairs
    for picture in pictures:
        header, data = picture["src"].split(",", 1)
        assert header == "data:image/jpeg;base64"
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        assert image.format == "JPEG" and max(image.size) <= report.PICTURE_SIDE


def test_top_flakes_show_their_nearest_distinct_neighbours_in_order(tmp_path, flakes):
    soup = BeautifulSoup(write(tmp_path, flakes, top_n=2, neighbours=4), "html.parser")
    rows = soup.find_all("div", class_="row")
    ranking = flakes[2]
    first = rows[0].find_all("figcaption")
    assert ranking["file"].iloc[0] in first[0].get_text() and len(first) == 5
    assert ranking["nearest_file"].iloc[0] in first[1].get_text()


def test_a_subset_of_flakes_and_a_real_run_without_demo(tmp_path, flakes):
    features, names, ranking, near, folder = flakes
    subset = ranking["file"].head(6).tolist()
    rows = [names.index(name) for name in subset]
    page = write(
        tmp_path,
        flakes,
        features=features[rows],
        flake_files=subset,
        positions=atlas.layout(features[rows]),
        run={"weights_mode": "imagenet", "demo": False},
    )
    assert table_files(page) == subset
    assert "DEMO run" not in page


def test_mismatched_inputs_are_a_clear_error_and_leave_nothing_behind(tmp_path, flakes):
    with pytest.raises(ValueError, match="one row per file"):
        write(tmp_path, flakes, positions=np.zeros((3, 2)))
    assert not (tmp_path / "out" / "report.html").exists()


#: A run.json record as notebook 02 writes it, for the facts in words.
NOTEBOOK_02_RUN = {
    "weights_mode": "random",
    "precision_asked": "auto",
    "precision": "bfloat16",
    "close_calls": 0,
    "demo": "random VGG16 weights and synthetic demo crystals",
    "layer": "block5_conv3",
    "image_size": 224,
    "n_images": 60,
    "n_skipped": 0,
    "n_cached": 0,
    "feature_dim": 100352,
    "extract_seconds": 4.25,
    "search_seconds": 0.031,
    "peak_memory_mib": 1443.2,
}


def test_page_opens_on_the_answer_and_ends_with_the_run(tmp_path, flakes):
    soup = BeautifulSoup(write(tmp_path, flakes, run=NOTEBOOK_02_RUN), "html.parser")
    ranking = flakes[2]
    answer = soup.find("p", class_="answer")
    assert ranking["file"].iloc[0] in answer.get_text()
    sections = [heading["id"] for heading in soup.find_all("h2")]
    assert sections == ["top-flakes", "ranking", "atlas", "near-duplicates", "run"]
    # Nothing but the title and the DEMO banner comes before the answer.
    body = [tag for tag in soup.body.find_all(recursive=False) if tag.name not in ("script",)]
    first = [tag for tag in body if tag.get_text(strip=True)][:3]
    assert [tag.name for tag in first] == ["h1", "p", "p"] and first[2] is answer


def test_the_run_is_told_in_words(tmp_path, flakes):
    soup = BeautifulSoup(write(tmp_path, flakes, run=NOTEBOOK_02_RUN), "html.parser")
    words = soup.find("h2", id="run").find_next("table", class_="facts")
    lines = [" ".join(row.stripped_strings) for row in words.find_all("tr")]
    assert "weights random (DEMO)" in lines
    assert "images 60 images, 0 skipped" in lines
    assert "features block5_conv3 at 224 × 224 pixels, 100,352 values per flake" in lines
    assert "precision bfloat16 (PRECISION = 'auto'), 0 close calls in the ranking" in lines
    assert "time 4.2 seconds extracting features, 0.031 seconds searching and ranking" in lines
    assert not any("_" in line.split()[0] for line in lines), "no raw run.json keys"
    raw = soup.find("details")
    assert "peak_memory_mib" in raw.get_text() and "Everything in run.json" in raw.summary.text


def test_the_facts_of_a_notebook_04_run_name_the_index_and_the_certificate():
    facts = dict(
        report.run_facts(
            {
                "weights_mode": "imagenet",
                "demo": False,
                "n": 1000,
                "n_distinct": 990,
                "n_skipped": 2,
                "n_extracted": 10,
                "index": {"kind": "ivf", "cells": 126, "nprobe": 8},
                "recall_at_1": 0.999,
                "recall_sample": 1000,
                "top_n": 10,
                "certified": True,
                "certificate_candidates": 200,
                "ray_address": "cluster",
                "ray_nodes": 3,
            }
        )
    )
    assert facts["weights"] == "imagenet"
    assert facts["images"] == "1,000 images, 990 distinct, 2 skipped, 10 extracted in this run"
    assert facts["index"] == "IVF, 126 cells, 8 probed per flake; recall@1 0.999 on 1,000 flakes"
    assert facts["certificate"] == "the top 10 certified exact, 200 candidates re-scored"
    assert facts["Ray"] == "a Ray cluster, 3 nodes"


def css_pixels(style, selector, prop):
    """The value in CSS pixels (1em = 16px) of ``prop`` in the rule for ``selector``."""
    rule = re.search(rf"(?m)^\s*{re.escape(selector)}\s*\{{([^}}]*)\}}", style)
    assert rule, f"no CSS rule for {selector}"
    found = re.search(rf"(?<![-\w]){prop}:\s*(?:0\s+)?([\d.]+)(px|em)", rule.group(1))
    assert found, f"{selector} has no {prop} in px or em: {rule.group(1)}"
    return float(found.group(1)) * (16 if found.group(2) == "em" else 1)


def test_a_top_flake_and_its_neighbours_fit_one_row_of_a_1280_pixel_window(tmp_path, flakes):
    soup = BeautifulSoup(write(tmp_path, flakes), "html.parser")
    style = "\n".join(tag.get_text() for tag in soup.find_all("style"))
    figure = css_pixels(style, "figure", "width")
    gap = css_pixels(style, ".row", "gap")
    content = css_pixels(style, "body", "max-width")
    padding = css_pixels(style, "body", "padding")
    pictures = 1 + report.NEIGHBOURS
    assert pictures * figure + (pictures - 1) * gap <= content
    scrollbar = 20  # wider than any desktop browser's
    assert content + 2 * padding + scrollbar <= 1280
    assert len(soup.find("div", class_="row").find_all("figure")) == pictures


def test_the_atlas_legend_sits_below_the_map_never_over_a_flake(tmp_path, flakes):
    """t-SNE fills the square, so a legend inside the map covers a corner flake from the pointer."""
    from bokeh.models import Legend

    features, names, ranking, near, folder = flakes
    source = report._ranking_source(atlas.layout(features), names, ranking, folder)
    plot = report.atlas_plot(source, near, top_n=3)
    assert [type(item) for item in plot.below if isinstance(item, Legend)] == [Legend]
    assert not [item for item in plot.center if isinstance(item, Legend)]
    assert len(plot.legend[0].items) == 3
