"""The report: self-contained (no network references), every flake once, neighbours right."""

from __future__ import annotations

import base64
import html
import io
import json
import re

import numpy as np
import pytest
from bs4 import BeautifulSoup
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


def table_files(page):
    """The ``file`` column of the table's data, read from the page's Bokeh document."""
    found = re.search(r'<script type="application/json"[^>]*>(.*?)</script>', page, re.S)
    document = json.loads(html.unescape(found.group(1)))
    columns = []

    def walk(node):
        if isinstance(node, list):
            if len(node) == 2 and node[0] == "file" and isinstance(node[1], list):
                columns.append(node[1])
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for item in node.values():
                walk(item)

    walk(document)
    assert len(columns) == 1, "one shared data source holds the file names"
    return columns[0]


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


def test_the_atlas_legend_sits_below_the_map_never_over_a_flake(tmp_path, flakes):
    """t-SNE fills the square, so a legend inside the map covers a corner flake from the pointer."""
    from bokeh.models import Legend

    features, names, ranking, near, folder = flakes
    source = report._ranking_source(atlas.layout(features), names, ranking, folder)
    plot = report.atlas_plot(source, near, top_n=3)
    assert [type(item) for item in plot.below if isinstance(item, Legend)] == [Legend]
    assert not [item for item in plot.center if isinstance(item, Legend)]
    assert len(plot.legend[0].items) == 3
