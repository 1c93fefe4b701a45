"""One self-contained HTML report of a run: ``results/report.html`` (notebook 02, "The atlas").

The page opens offline in any browser, from a double click: no server and no network. Every
thumbnail is a small JPEG embedded as a ``data:`` URI and Bokeh's JavaScript is inlined
(``bokeh.resources.INLINE``). It holds the run's facts, the ranking as a sortable and
filterable table, the interactive atlas (hover for a flake's thumbnail, file and rank; zoom and
pan; click a flake to find it in the table), each of the most unique flakes beside its nearest
distinct neighbours, and the near-duplicate pairs side by side.

Size: about ``2 x THUMBNAIL_BYTES`` per flake (its own thumbnail and its nearest flake's, in
the table) plus about 2 MB of Bokeh; the README gives measured sizes.
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

from snowflake_tools import atlas, files, search

#: Side of the thumbnails in the table and the atlas, in pixels: small keeps the page small.
THUMBNAIL_SIDE = 64
#: Side of the larger pictures of the top flakes, their neighbours and near-duplicate pairs.
PICTURE_SIDE = 160
#: JPEG quality of the embedded thumbnails: 75 keeps a crystal's arms sharp at 64 pixels.
JPEG_QUALITY = 75
#: How many nearest distinct neighbours are shown beside each of the most unique flakes.
NEIGHBOURS = 5


def jpeg_data_uri(path: str | os.PathLike, side: int = THUMBNAIL_SIDE) -> str:
    """The image at ``path`` as a small JPEG ``data:`` URI, at most ``side`` pixels each way."""
    buffer = io.BytesIO()
    atlas.thumbnail(path, side).save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
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
    zoom in); past that as points, as in ``atlas.plot_atlas``.
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


def _facts_html(run: Mapping) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(str(value))}</td></tr>"
        for key, value in run.items()
    )
    return f'<table class="facts">{rows}</table>'


_TEMPLATE = """
{% from macros import embed %}
{% block postamble %}
<style>
  body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1000px;
         height: auto; display: block; padding: 0 1em; color: #222; }
  .demo { background: #c62828; color: white; padding: .6em 1em; font-weight: bold; }
  .facts th { text-align: left; padding-right: 1.5em; font-weight: normal; color: #555; }
  .row { display: flex; flex-wrap: wrap; gap: .6em; align-items: flex-start; margin: 1em 0; }
  figure { margin: 0; width: 160px; font-size: 12px; overflow-wrap: anywhere; }
  figure:first-child { outline: 3px solid #c62828; }
  .pair { align-self: center; }
</style>
{% endblock %}
{% block contents %}
<h1>{{ heading | e }}</h1>
{{ banner | safe }}
<h2>The run</h2>
{{ facts | safe }}
<h2>The ranking</h2>
<p>Click a column header to sort; type in the box to filter.
The distance is the squared L2 distance from a flake to its nearest distinct flake: the larger,
the more unique.</p>
{{ embed(roots.ranking) }}
<h2>The atlas</h2>
<p>Every flake on a t-SNE map of its features: look-alikes sit together.
Red squares are the most unique flakes, orange lines join near-duplicate pairs.</p>
{{ embed(roots.atlas) }}
<h2>The {{ top_n }} most unique flakes and their {{ k }} nearest distinct neighbours</h2>
{{ top_flakes | safe }}
<h2>Near-duplicate pairs</h2>
{{ near_duplicates | safe }}
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
    demo = run.get("demo")
    banner = ""
    if demo:
        why = demo if isinstance(demo, str) else "not a real result"
        banner = f'<p class="demo">DEMO run ({html.escape(why)}): the ranking shows the method, '
        banner += "not real snowflakes.</p>"
    page = file_html(
        roots,
        INLINE,
        title=title,
        template=_TEMPLATE,
        template_variables={
            "heading": title,
            "banner": banner,
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
