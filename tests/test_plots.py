"""Figures: they draw what they say, save atomically and carry DEMO when asked."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from helpers import ODD_NAMES as ALL_ODD_NAMES  # noqa: E402
from PIL import Image  # noqa: E402

from snowflake_tools import plots  # noqa: E402


@pytest.fixture
def ranking(tmp_path):
    rng = np.random.default_rng(0)
    names = [f"f{i}.png" for i in range(8)]
    for name in names:
        Image.fromarray(rng.integers(0, 255, (30, 20, 3), dtype=np.uint8)).save(tmp_path / name)
    distances = [100.0, 9.0, 8.0, 8.0, 7.5, 7.0, 6.0, np.nan]
    return pd.DataFrame(
        {
            "rank": range(1, 9),
            "file": names,
            "nearest_file": names[1:] + [""],
            "distance": distances,
            "duplicates": 0,
        }
    )


def texts(figure):
    return [t.get_text() for t in figure.findobj(matplotlib.text.Text)]


#: Six of the file names matplotlib would read as maths: the box plot labels all six outliers.
ODD_NAMES = ALL_ODD_NAMES[:6]


@pytest.fixture
def odd_ranking(tmp_path):
    """A ranking whose six most unique flakes (and their nearest flakes) have ``ODD_NAMES``.

    Six far outliers among 24 plain flakes, so the box plot labels every odd name.
    """
    rng = np.random.default_rng(1)
    names = ODD_NAMES + [f"plain{i}.png" for i in range(24)]
    for name in names:
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / name)
    return pd.DataFrame(
        {
            "rank": range(1, len(names) + 1),
            "file": names,
            "nearest_file": ODD_NAMES[1:] + ODD_NAMES[:1] + names[:24],
            "distance": [100.0, 90, 80, 70, 60, 50, *np.linspace(2, 1, 24)],
            "duplicates": 0,
        }
    )


def drawn_lines(figure, monkeypatch):
    """Draw ``figure`` with Agg; return each line of text drawn, and whether it was maths."""
    from matplotlib.backends.backend_agg import RendererAgg

    drawn = []
    draw_text = RendererAgg.draw_text

    def record(self, gc, x, y, s, prop, angle, ismath=False, mtext=None):
        drawn.append((s, ismath))
        return draw_text(self, gc, x, y, s, prop, angle, ismath, mtext)

    monkeypatch.setattr(RendererAgg, "draw_text", record)
    figure.canvas.draw()
    return drawn


@pytest.mark.parametrize(
    "make_figure",
    [
        lambda ranking, folder: plots.plot_distances(ranking),
        lambda ranking, folder: plots.plot_most_unique(ranking, folder, top_n=6, demo=True),
        lambda ranking, folder: plots.show_flakes(
            [folder / name for name in ODD_NAMES[1:]], suptitle=ODD_NAMES[0]
        ),
    ],
    ids=["plot_distances", "plot_most_unique", "show_flakes"],
)
def test_file_names_are_drawn_exactly_as_written(make_figure, odd_ranking, tmp_path, monkeypatch):
    lines = drawn_lines(make_figure(odd_ranking, tmp_path), monkeypatch)
    for name in ODD_NAMES:
        assert (name, False) in lines, f"{name!r} not drawn as plain text: {lines}"


def test_outliers_use_the_box_plot_rule():
    values = pd.Series([1.0, 2.0, 2.0, 3.0, 100.0])
    assert plots.outliers(values).tolist() == [False, False, False, False, True]


def test_distance_plot_labels_outliers_by_file(ranking):
    figure = plots.plot_distances(ranking)
    assert "f0.png" in texts(figure)
    assert "f3.png" not in texts(figure)
    assert not any("DEMO" in t for t in texts(figure))


def test_most_unique_titles_carry_rank_files_and_distance(ranking, tmp_path):
    figure = plots.plot_most_unique(ranking, tmp_path, top_n=3, demo=True)
    assert len(figure.axes) == 6
    titles = [axis.get_title() for axis in figure.axes]
    assert titles[0] == "Unique rank 1\nf0.png"
    assert "f1.png" in titles[1] and "L2² = 100" in titles[1]
    assert "DEMO" in texts(figure)


def test_show_flakes_and_atomic_save(ranking, tmp_path):
    paths = [tmp_path / name for name in ranking["file"][:5]]
    figure = plots.show_flakes(paths + [np.full((8, 8, 3), 300.0)], columns=3)
    assert [axis.get_title() for axis in figure.axes] == [p.name for p in paths] + [""]
    assert figure.axes[-1].images[0].get_array().max() == 255
    saved = plots.save_figure(figure, tmp_path / "out" / "montage.png")
    assert Image.open(saved).format == "PNG"
    assert [p.name for p in saved.parent.iterdir()] == ["montage.png"]


def test_retrieval_bar_chart_labels_its_bars_and_says_demo():
    summary = pd.DataFrame(
        {
            "method": ["flat"] * 3 + ["pooled"] * 3,
            "variant": ["a", "b", "all variants"] * 2,
            "recall_at_1": [2 / 3, 1 / 3, 0.5, 2 / 3, 1.0, 5 / 6],
            "median_rank": [1.0, 2.0, 1.5, 1.0, 1.0, 1.0],
            "n_variants": [3, 3, 6] * 2,
        }
    )
    figure = plots.plot_self_retrieval(summary, demo="why")
    words = texts(figure)
    assert "DEMO" in words and "DEMO: why" in words
    assert words.count("0.67") == 2  # variant "a", both methods
    assert words.count("0.83") == 1
    assert len(figure.axes[0].patches) == 2 * 3  # two methods x (a, b, all variants)


def test_without_any_distinct_neighbour_the_figures_say_so(ranking, tmp_path):
    copies = ranking.assign(nearest_file="", distance=np.nan, duplicates=7)
    for figure in (plots.plot_distances(copies), plots.plot_most_unique(copies, tmp_path)):
        assert any("No flake has a distinct neighbour" in text for text in texts(figure))
        plots.save_figure(figure, tmp_path / "figure.png")


def test_unreadable_file_gives_a_grey_thumbnail(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    image = plots.thumbnail(tmp_path / "bad.png", 32)
    assert image.size == (32, 32)
