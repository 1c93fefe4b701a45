"""One self-contained HTML report of a run: ``results/report.html`` (notebook 02, "The atlas").

The page opens offline in any browser, from a double click: no server and no network. Every
thumbnail is a small JPEG embedded as a ``data:`` URI and Bokeh's JavaScript is inlined
(``bokeh.resources.INLINE``). It opens on the answer: the most unique flakes, each on one row
beside its nearest distinct neighbours. Then the ranking as a sortable and filterable table,
the interactive atlas (hover for a flake's thumbnail, file and rank; zoom and pan; click a
flake to find it in the table), the near-duplicate pairs side by side, and last the run's
facts in words (weights, images, features, precision, timings) with the raw ``run.json``.

Size: about ``2 x THUMBNAIL_BYTES`` per flake (its own thumbnail and its nearest flake's, in
the table) plus about 2 MB of Bokeh; ``docs/performance.md`` gives measured sizes.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from bokeh.embed import file_html
from bokeh.layouts import column
from bokeh.models import (
    BooleanFilter,
    CDSView,
    ColumnDataSource,
    CustomJS,
    DataTable,
    HoverTool,
    HTMLTemplateFormatter,
    Legend,
    NumberFormatter,
    TableColumn,
    TapTool,
    TextInput,
)
from bokeh.plotting import figure as bokeh_figure
from bokeh.resources import INLINE

from snowflake_tools import atlas, files, plots, search

#: Side of the thumbnails in the table and the atlas, in pixels: small keeps the page small.
THUMBNAIL_SIDE = 64
#: Side of the larger pictures of the top flakes, their neighbours and near-duplicate pairs.
PICTURE_SIDE = 160
#: JPEG quality of the embedded thumbnails: 75 keeps a crystal's arms sharp at 64 pixels.
JPEG_QUALITY = 75
#: How many nearest distinct neighbours are shown beside each of the most unique flakes.
NEIGHBOURS = 5
#: Width of the page's content, in CSS pixels: a top flake and its NEIGHBOURS pictures fit on
#: one row (6 x 160 + 5 gaps), and with the margins the page fits a 1,280-pixel-wide window.
PAGE_WIDTH = 1060
#: Space between the pictures of a row, and the page's padding on each side, in CSS pixels.
GAP = 12
PADDING = 16


def jpeg_data_uri(path: str | os.PathLike, side: int = THUMBNAIL_SIDE) -> str:
    """The image at ``path`` as a small JPEG ``data:`` URI, at most ``side`` pixels each way."""
    buffer = io.BytesIO()
    plots.thumbnail(path, side).save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _ranking_source(
    positions: np.ndarray, flake_files: Sequence[str], ranking: pd.DataFrame, image_dir: Path
) -> ColumnDataSource:
    """One row per flake by rank, shared by table and atlas so each thumbnail is stored once."""
    rows = atlas.select_rows(ranking, flake_files).assign(x=positions[:, 0], y=positions[:, 1])
    rows = rows.sort_values("rank", kind="stable").reset_index(drop=True)
    thumbs = {name: jpeg_data_uri(image_dir / name) for name in rows["file"]}
    nearest = [
        thumbs.get(name) or (jpeg_data_uri(image_dir / name) if name else "")
        for name in rows["nearest_file"]
    ]
    return ColumnDataSource(
        {
            "x": rows["x"].to_numpy(),
            "y": rows["y"].to_numpy(),
            "rank": rows["rank"].to_numpy(),
            "file": rows["file"].tolist(),
            "thumb": [thumbs[name] for name in rows["file"]],
            "nearest_file": rows["nearest_file"].tolist(),
            "nearest_thumb": nearest,
            "distance": rows["distance"].to_numpy(dtype=np.float64),
            "duplicates": rows["duplicates"].to_numpy(),
        }
    )


def ranking_table(source: ColumnDataSource) -> tuple[TextInput, DataTable]:
    """A sortable DataTable of the ranking and a box that filters it by file name."""
    image = HTMLTemplateFormatter(template='<img src="<%= value %>" height="48" alt="">')
    columns = [
        TableColumn(field="rank", title="rank", width=50),
        TableColumn(field="thumb", title="flake", formatter=image, sortable=False, width=60),
        TableColumn(field="file", title="file", width=220),
        TableColumn(
            field="nearest_thumb", title="nearest", formatter=image, sortable=False, width=60
        ),
        TableColumn(field="nearest_file", title="nearest file", width=220),
        TableColumn(
            field="distance",
            title="distance (L2²)",
            formatter=NumberFormatter(format="0,0.000"),
            width=110,
        ),
        TableColumn(field="duplicates", title="copies", width=60),
    ]
    keep = BooleanFilter(booleans=[True] * len(source.data["file"]))
    table = DataTable(
        source=source,
        view=CDSView(filter=keep),
        columns=columns,
        row_height=52,
        width=900,
        height=420,
        index_position=None,
        reorderable=False,
        name="ranking_table",
    )
    box = TextInput(title="Filter by file name:", placeholder="part of a file name", width=300)
    box.js_on_change(
        "value_input",
        CustomJS(
            args={"source": source, "keep": keep},
            code="""
            const text = cb_obj.value_input.toLowerCase();
            const names = source.data.file;
            const nearest = source.data.nearest_file;
            keep.booleans = names.map((name, i) =>
                name.toLowerCase().includes(text) || nearest[i].toLowerCase().includes(text));
            source.change.emit();
            """,
        ),
    )
    return box, table


def atlas_plot(source: ColumnDataSource, near_duplicates: pd.DataFrame, top_n: int):
    """The atlas as a Bokeh figure: hover shows thumbnail, file and rank; zoom and pan.

    Up to ``atlas.MAX_THUMBNAILS`` flakes each is drawn as its thumbnail (they grow as you
    zoom in); past that as points, as in ``plots.plot_atlas``.
    """
    plot = bokeh_figure(
        width=900,
        height=700,
        match_aspect=True,
        tools="pan,wheel_zoom,box_zoom,reset,save",
        active_scroll="wheel_zoom",
        title="The atlas: hover a flake; scroll to zoom, drag to pan",
        name="atlas",
    )
    plot.axis.visible = False
    plot.grid.visible = False
    # Below the map, not on it: a legend inside would cover the flakes in its corner (t-SNE
    # fills the whole square), and under it they could not be hovered or clicked.
    plot.add_layout(Legend(orientation="horizontal"), "below")
    n_flakes = len(source.data["file"])
    as_thumbnails = n_flakes <= atlas.MAX_THUMBNAILS
    side = atlas.thumbnail_side(n_flakes)
    if as_thumbnails:
        plot.image_url(url="thumb", x="x", y="y", w=side, h=side, anchor="center", source=source)
    where = dict(
        zip(source.data["file"], zip(source.data["x"], source.data["y"], strict=True), strict=True)
    )
    pairs = [
        (where[a], where[b])
        for a, b in zip(
            near_duplicates.get("file", []), near_duplicates.get("nearest_file", []), strict=True
        )
        if a in where and b in where
    ]
    if pairs:
        plot.segment(
            x0=[a[0] for a, _ in pairs],
            y0=[a[1] for a, _ in pairs],
            x1=[b[0] for _, b in pairs],
            y1=[b[1] for _, b in pairs],
            color="orange",
            line_width=2,
            legend_label="near-duplicate pair",
        )
    # Invisible over thumbnails, but still what the hover and tap tools find.
    flakes = plot.scatter(
        "x",
        "y",
        source=source,
        size=12,
        color="#3b6ea8",
        alpha=0.0 if as_thumbnails else 0.8,
        legend_label="flake (hover me; copies share a spot)",
    )
    ranks = np.asarray(source.data["rank"])
    top = np.flatnonzero(ranks <= top_n)
    if len(top):
        xs, ys = np.asarray(source.data["x"])[top], np.asarray(source.data["y"])[top]
        plot.rect(
            xs,
            ys,
            width=side,
            height=side,
            fill_alpha=0,
            line_color="red",
            line_width=2.5,
            legend_label=f"{len(top)} most unique",
        )
        plot.text(
            xs,
            ys + side * 0.55,
            text=[f"#{r}" for r in ranks[top]],
            text_color="red",
            text_align="center",
            text_baseline="bottom",
            text_font_style="bold",
            text_font_size="13px",
        )
    plot.add_tools(
        HoverTool(
            renderers=[flakes],
            tooltips="""<div><img src="@thumb" width="96" alt=""><br>
            <b>#@rank</b> @file<br>nearest: @nearest_file<br>L2² @distance{0,0.000}</div>""",
        ),
        TapTool(renderers=[flakes]),
    )
    return plot


def _picture(path: Path, caption: str) -> str:
    return (
        f'<figure><img src="{jpeg_data_uri(path, PICTURE_SIDE)}" alt="{html.escape(path.name)}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _top_flakes_html(features, flake_files, ranking, image_dir, top_n, k) -> str:
    rows_of = {name: row for row, name in enumerate(flake_files)}
    top = atlas.select_rows(ranking, flake_files).nsmallest(top_n, "rank")
    neighbours = search.distinct_neighbours(features, [rows_of[name] for name in top["file"]], k)
    parts = []
    for flake in top.itertuples():
        row = rows_of[flake.file]
        mine = neighbours[neighbours["row"] == row]
        cells = [
            _picture(
                image_dir / flake.file, f"<b>rank {flake.rank}</b><br>{html.escape(flake.file)}"
            )
        ]
        for hit in mine.itertuples():
            name = flake_files[hit.neighbour]
            cells.append(
                _picture(
                    image_dir / name, f"{hit.order}. {html.escape(name)}<br>L2² {hit.distance:,.3f}"
                )
            )
        parts.append(f'<div class="row">{"".join(cells)}</div>')
    return "\n".join(parts)


def _near_duplicates_html(near_duplicates: pd.DataFrame, image_dir: Path) -> str:
    if not len(near_duplicates):
        return "<p>No near-duplicate pairs in this run.</p>"
    parts = []
    for pair in near_duplicates.itertuples():
        ratio = getattr(pair, "ratio_to_median", float("nan"))
        caption = f"L2² {pair.distance:,.3f} ({ratio:.3f} × median)"
        parts.append(
            f'<div class="row">{_picture(image_dir / pair.file, html.escape(pair.file))}'
            f"{_picture(image_dir / pair.nearest_file, html.escape(pair.nearest_file))}"
            f'<p class="pair">{caption}</p></div>'
        )
    return "\n".join(parts)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _seconds(value: float) -> str:
    return f"{value:,.1f} seconds" if value >= 1 else f"{value:.2g} seconds"


def _index_words(settings: Mapping) -> str:
    kind = settings.get("kind", "?")
    if kind == "flat":
        return "exact (FAISS IndexFlatL2)"
    if kind == "ivf":
        return f"IVF, {settings.get('cells')} cells, {settings.get('nprobe')} probed per flake"
    if kind == "hnsw":
        return f"HNSW, {settings.get('links')} links per node"
    return str(kind)


def run_facts(run: Mapping) -> list[tuple[str, str]]:
    """The run's facts as (topic, words) lines, from the ``run.json`` record of notebook 02, 03
    or 04: "weights: random (DEMO)", "images: 60 images, 0 skipped", ... Keys a record lacks
    are left out; the raw record is shown beside these lines anyway."""
    facts = []
    if "weights_mode" in run:
        facts.append(("weights", f"{run['weights_mode']}{' (DEMO)' if run.get('demo') else ''}"))
    n_images = run.get("n_images", run.get("n"))
    if n_images is not None:
        words = [_count(n_images, "image")]
        if "n_distinct" in run:
            words.append(f"{run['n_distinct']:,} distinct")
        words.append(f"{run.get('n_skipped', 0):,} skipped")
        if run.get("n_cached"):
            words.append(f"{run['n_cached']:,} read from the feature cache")
        if "n_extracted" in run:
            words.append(f"{run['n_extracted']:,} extracted in this run")
        facts.append(("images", ", ".join(words)))
    if "layer" in run or "feature_dim" in run:
        words = [str(run.get("layer", "VGG16"))]
        if "image_size" in run:
            words[0] += f" at {run['image_size']} × {run['image_size']} pixels"
        if "pooling" in run:
            words.append(f"pooled: {run['pooling']}")
        if "feature_vector" in run:
            words.append(f"feature vector: {run['feature_vector']}")
        if "feature_dim" in run:
            words.append(f"{run['feature_dim']:,} values per flake")
        facts.append(("features", ", ".join(words)))
    if "precision" in run:
        words = str(run["precision"])
        if run.get("precision_asked") not in (None, run["precision"]):
            words += f" (PRECISION = {run['precision_asked']!r})"
        if "close_calls" in run:
            words += f", {_count(run['close_calls'], 'close call')} in the ranking"
        facts.append(("precision", words))
    if isinstance(run.get("index"), Mapping):
        words = _index_words(run["index"])
        if "recall_at_1" in run:
            sample = run.get("recall_sample")
            words += f"; recall@1 {run['recall_at_1']}" + (
                f" on {sample:,} flakes" if sample else ""
            )
        facts.append(("index", words))
    if "certified" in run:
        top = f"the top {run['top_n']}" if "top_n" in run else "the top"
        verdict = "certified exact" if run["certified"] else "NOT certified"
        facts.append(
            (
                "certificate",
                f"{top} {verdict}, {run.get('certificate_candidates', '?')} candidates re-scored",
            )
        )
    timings = [
        f"{_seconds(run[key])} {what}"
        for key, what in (
            ("extract_seconds", "extracting features"),
            ("describe_seconds", "describing every copy"),
            ("search_seconds", "searching and ranking"),
            ("total_seconds", "for the whole notebook"),
        )
        if key in run
    ]
    if timings:
        facts.append(("time", ", ".join(timings)))
    if "peak_memory_mib" in run:
        facts.append(("memory", f"at most {run['peak_memory_mib']:,.0f} MiB resident"))
    if "ray_address" in run:
        nodes = run.get("ray_nodes")
        where = "a local Ray on this machine" if run["ray_address"] == "local" else "a Ray cluster"
        facts.append(("Ray", where + (f", {_count(nodes, 'node')}" if nodes else "")))
    return facts


def _facts_html(run: Mapping) -> str:
    lines = "".join(
        f"<tr><th>{html.escape(topic)}</th><td>{html.escape(words)}</td></tr>"
        for topic, words in run_facts(run)
    )
    raw = "".join(
        f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(str(value))}</td></tr>"
        for key, value in run.items()
    )
    return (
        f'<table class="facts">{lines}</table>'
        f'<details><summary>Everything in run.json</summary><table class="facts">{raw}</table>'
        "</details>"
    )


def _style() -> str:
    """The page's CSS, its widths in pixels from the constants above (a test adds them up)."""
    return f"""
  body {{ font-family: system-ui, sans-serif; margin: 24px auto; max-width: {PAGE_WIDTH}px;
         height: auto; display: block; padding: 0 {PADDING}px; color: #222; }}
  .demo {{ background: #c62828; color: white; padding: .6em 1em; font-weight: bold; }}
  .answer {{ font-size: 1.15em; }}
  .facts th {{ text-align: left; padding-right: 1.5em; font-weight: normal; color: #555; }}
  .row {{ display: flex; flex-wrap: wrap; gap: {GAP}px; align-items: flex-start; margin: 1em 0; }}
  figure {{ margin: 0; width: {PICTURE_SIDE}px; font-size: 12px; overflow-wrap: anywhere; }}
  figure:first-child {{ outline: 3px solid #c62828; }}
  .pair {{ align-self: center; }}
"""


def _answer_html(ranking: pd.DataFrame) -> str:
    """One sentence: which flake is the most unique, and how far its nearest distinct flake is."""
    if not len(ranking):
        return ""
    first = ranking.sort_values("rank", kind="stable").iloc[0]
    median = float(ranking["distance"].median())
    ratio = first["distance"] / median if median > 0 else float("nan")
    times = f", {ratio:.1f} times the median" if np.isfinite(ratio) else ""
    return (
        f'<p class="answer">The most unique flake is <b>{html.escape(str(first["file"]))}</b>: '
        f"its nearest distinct flake, {html.escape(str(first['nearest_file']))}, is at "
        f"L2² {first['distance']:,.3f}{times}.</p>"
    )


def _demo_banner(demo: bool | str | None) -> str:
    """The red DEMO line on top of a page, or "" for a real run."""
    if not demo:
        return ""
    why = demo if isinstance(demo, str) else "not a real result"
    return (
        f'<p class="demo">DEMO run ({html.escape(why)}): the ranking shows the method, '
        "not real snowflakes.</p>"
    )


_TEMPLATE = """
{% from macros import embed %}
{% block postamble %}
<style>{{ style }}</style>
{% endblock %}
{% block contents %}
<h1>{{ heading | e }}</h1>
{{ banner | safe }}
{{ answer | safe }}
<h2 id="top-flakes">The {{ top_n }} most unique flakes and their {{ k }} nearest distinct
neighbours</h2>
{{ top_flakes | safe }}
<h2 id="ranking">The ranking</h2>
<p>Click a column header to sort; type in the box to filter.
The distance is the squared L2 distance from a flake to its nearest distinct flake: the larger,
the more unique.</p>
{{ embed(roots.ranking) }}
<h2 id="atlas">The atlas</h2>
<p>Every flake on a t-SNE map of its features: look-alikes sit together.
Red squares are the most unique flakes, orange lines join near-duplicate pairs.</p>
{{ embed(roots.atlas) }}
<h2 id="near-duplicates">Near-duplicate pairs</h2>
{{ near_duplicates | safe }}
<h2 id="run">The run</h2>
{{ facts | safe }}
{% endblock %}
"""


def write_report(
    path: str | os.PathLike,
    *,
    features: np.ndarray,
    flake_files: Sequence[str],
    ranking: pd.DataFrame,
    near_duplicates: pd.DataFrame,
    image_dir: str | os.PathLike,
    positions: np.ndarray,
    run: Mapping,
    top_n: int = 3,
    neighbours: int = NEIGHBOURS,
    title: str = "Which snowflake is the most unique?",
) -> Path:
    """Write the self-contained report to ``path`` (atomically) and return the path.

    Args:
        features: the feature matrix, one row per name in ``flake_files``.
        flake_files: image file names relative to ``image_dir``; a subset of the ranking works
            (notebook 04 reports on its top flakes).
        ranking: ``search.rank_uniqueness`` output holding at least ``flake_files``.
        near_duplicates: ``search.find_near_duplicates`` output.
        image_dir: the folder of the images.
        positions: ``atlas.layout(features)``.
        run: the run's facts, as written to ``run.json``; a true ``demo`` entry puts a DEMO
            banner on top.
        top_n: how many of the most unique flakes get their neighbours shown.
        neighbours: how many nearest distinct neighbours each of them gets.
    """
    image_dir = Path(image_dir)
    positions = np.asarray(positions, dtype=np.float64)
    if positions.shape != (len(flake_files), 2) or len(features) != len(flake_files):
        raise ValueError(
            f"features ({len(features)} rows) and positions {positions.shape} must have one "
            f"row per file ({len(flake_files)} files)"
        )
    source = _ranking_source(positions, flake_files, ranking, image_dir)
    box, table = ranking_table(source)
    roots = [column(box, table, name="ranking"), atlas_plot(source, near_duplicates, top_n)]
    banner = _demo_banner(run.get("demo"))
    page = file_html(
        roots,
        INLINE,
        title=title,
        template=_TEMPLATE,
        template_variables={
            "heading": title,
            "style": _style(),
            "banner": banner,
            "answer": _answer_html(ranking),
            "facts": _facts_html(run),
            "top_n": top_n,
            "k": neighbours,
            "top_flakes": _top_flakes_html(
                features, list(flake_files), ranking, image_dir, top_n, neighbours
            ),
            "near_duplicates": _near_duplicates_html(near_duplicates, image_dir),
        },
    )
    return files.atomic_write_text(path, page)


# --- Notebook 05: why/report.html -------------------------------------------------------------

_WHY_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
  body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px;
         padding: 0 1em; color: #222; }}
  .demo {{ background: #c62828; color: white; padding: .6em 1em; font-weight: bold; }}
  .facts th {{ text-align: left; padding-right: 1.5em; font-weight: normal; color: #555; }}
  .row {{ display: flex; flex-wrap: wrap; gap: .6em; align-items: flex-start; margin: 1em 0; }}
  figure {{ margin: 0; width: 160px; font-size: 12px; overflow-wrap: anywhere; }}
  img.figure {{ max-width: 100%; }}
</style></head><body>
<h1>{title}</h1>
{banner}
<p>Notebook 05 on the ranking of notebook 02; its full report is
<a href="../report.html">report.html</a>.</p>
<h2>The run</h2>
{facts}
{sections}
</body></html>
"""


def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def write_why_report(
    path: str | os.PathLike,
    *,
    figures: Sequence[tuple[str, str, str | os.PathLike]],
    chosen: pd.DataFrame,
    image_dir: str | os.PathLike,
    run: Mapping,
    title: str = "Why is it unique?",
) -> Path:
    """Write notebook 05's small offline page (atomically) and return its path.

    ``figures`` holds ``(heading, text, png_path)`` for each saved figure, embedded whole;
    ``chosen`` is ``why/most_different.csv`` (``order, file, distance_to_set``), shown as
    pictures. The page sits beside notebook 02's ``report.html`` and links to it.
    """
    image_dir = Path(image_dir)
    sections = [
        f"<h2>{html.escape(heading)}</h2><p>{html.escape(text)}</p>"
        f'<img class="figure" src="{_png_data_uri(Path(png))}" alt="{html.escape(heading)}">'
        for heading, text, png in figures
    ]
    pictures = []
    for flake in chosen.itertuples():
        gap = "first" if pd.isna(flake.distance_to_set) else f"L2² {flake.distance_to_set:,.3f}"
        caption = f"<b>{flake.order}.</b> {html.escape(flake.file)}<br>to the set: {gap}"
        pictures.append(_picture(image_dir / flake.file, caption))
    sections.append(f'<h2>The most different set</h2><div class="row">{"".join(pictures)}</div>')
    page = _WHY_PAGE.format(
        title=html.escape(title),
        banner=_demo_banner(run.get("demo")),
        facts=_facts_html(run),
        sections="\n".join(sections),
    )
    return files.atomic_write_text(path, page)
