"""Shared fixtures: synthetic snowflake images and a loopback web server serving a fixture gallery.

Nothing here touches the real network: the server listens on 127.0.0.1 on a random port, and
every page and image is written by the fixtures into ``tmp_path`` (images are synthetic
crystals from ``snowflake_tools.demo``, never real photos).

Fixtures
--------
``make_image`` -> ``make_image(seed, size=(120, 100), fmt="JPEG") -> bytes``
    A synthetic six-fold "snow crystal", encoded as JPEG, PNG or GIF. ``size`` is (width,
    height) in pixels; different seeds give different bytes (and SHA-256).

``gallery_server`` -> ``GalleryServer`` (empty; started, stopped after the test)
    A ``ThreadingHTTPServer`` on 127.0.0.1 serving the folder ``server.root``.
    Build content:   ``server.add_page(path, html)``, ``server.add_file(path, data)``,
                     ``server.add_image(path, seed, size, fmt) -> bytes``; ``server.url(path)``
                     gives the absolute URL (``server.base_url`` is ``http://127.0.0.1:PORT``).
    Misbehave:       ``server.fail_first(path, times, status=500)`` answers ``status`` to the
                     first ``times`` requests of ``path``; ``server.serve_as(path, content_type)``
                     sends the file with that Content-Type (HTML served as ``image/jpeg``);
                     ``server.truncate_body(path)`` declares a Content-Length larger than the
                     file, sends the file and closes. Missing files answer 404.
                     ``server.respond(path, body, status, headers, trickle_s)`` sends exactly
                     that (``trickle_s``: one byte at a time), ``server.redirect(path,
                     location, status=302)`` a redirect (any Location, even malformed),
                     ``server.serve_gzip(path, body, content_type)`` a gzip-encoded answer;
                     ``server.sent(path)`` counts body bytes sent so far.
    Bounds:          127.0.0.1 only; after ``MAX_REQUESTS`` requests it answers 503, after
                     ``SERVER_LIFETIME_S`` it shuts down, and stops with its test.
    Read the log:    ``server.log`` is a list of ``LoggedRequest(method, path, query, user_agent,
                     host, time)``, ``path`` percent-decoded and without the query;
                     ``server.count(path, method="GET")`` counts requests of one path,
                     ``server.paths(method="GET")`` lists requested paths in order,
                     ``server.clear_log()`` empties the log (e.g. between two runs).
    Paths are URL paths starting with ``/`` and are matched after percent-decoding.

``snow_gallery`` -> ``SnowGallery`` (``gallery_server`` filled with the standard fixture gallery)
    A copy in miniature of the university's gallery, with every case the scraper must handle:
    the index at ``/~flakes/met/snow/images.html`` linking to pages in its folder tree,
    thumbnails linking to full-size photos, one photo on two pages and one under two URLs,
    16x16 icons, a 404, HTML served as ``.jpg``, a file served as ``text/html``, a truncated
    JPEG, a truncated body, relative/absolute/percent-encoded URLs with queries and fragments,
    dot segments, an off-folder image on the same host, a link back to the index, links to
    another site (``localhost`` instead of ``127.0.0.1``), a page outside the folder tree, a
    page two links deep, robots.txt disallowing a page and an image, a GIF, an uppercase
    ``.JPG``, a ``.jpeg`` and a PNG. ``photos/retry.jpg`` answers 500 twice, then the photo.
    Attributes: ``server``, ``index_url``, ``expected_sha256`` (the distinct full-size photos
    a scrape at depth 1 must save, and nothing else), ``expected_urls`` (their canonical URLs),
    ``expected_skips`` (canonical URL -> start of the report's reason), ``image_paths`` (URL
    paths whose body is a valid image: after a first run, a second run must GET none of them),
    ``never_requested`` (URL paths that must never be requested: thumbnails, robots-disallowed,
    out of scope), ``skipped_pages`` (canonical page URL -> reason), ``deep_sha256`` (the photo
    only found at depth 2).

``gallery_expected_sha256`` -> ``frozenset[str]``
    ``snow_gallery.expected_sha256``: "saves exactly the distinct full-size photos".

``closed_port_url`` -> ``str``
    ``http://127.0.0.1:PORT/gallery/index.html`` with nothing listening on PORT.

``elsewhere_server`` -> ``GalleryServer``
    A second server (another port, so another site): where off-site redirects point.

``hostile_gallery`` -> ``HostileGallery`` (``gallery_server`` and ``elsewhere_server`` filled)
    ``/h/index.html`` on ``gallery_server``: four good photos (two behind in-gallery redirects)
    among traps (redirect loops and chains, ``file://``, off-site and robots-disallowed
    redirects, bad gzip, gzip bombs, malformed links); see ``build_hostile_gallery``.
    Attributes: ``server``, ``elsewhere``, ``index_url``, ``expected_sha256``, ``image_skips``
    and ``page_skips`` (URL -> start of the reason), ``malformed_links``.
    ``gzip_bomb(n_bytes)`` builds a gzip stream inflating to ``n_bytes`` (``BOMB_BYTES``).
``two_node_cluster`` -> ``ray.cluster_utils.Cluster`` (two Ray nodes on loopback, shut down
    after the test; connect with ``ray_extract.start_ray(cluster.address)``)
"""

from __future__ import annotations

import os

# Before any OpenMP runtime loads (FAISS, scikit-learn each bring one): threads that wait for
# work sleep instead of spinning, so one runtime's idle threads do not slow the next one's
# work. t-SNE right after a FAISS search took 3.6 s instead of 0.4 s, and ten times more
# with other work on the machine (tests/test_atlas.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import contextlib
import functools
import hashlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import numpy as np
import papermill
import pytest
from helpers import gzip_bomb
from PIL import Image

from snowflake_tools import demo

# --- Synthetic images -------------------------------------------------------------------------


def draw_flake(seed: int, size: tuple[int, int] = (120, 100)) -> np.ndarray:
    """A synthetic snow crystal, ``size`` = (width, height): ``demo.quick_crystal``'s pixels."""
    return demo.quick_crystal(seed, size)


def encode_image(pixels: np.ndarray, fmt: str = "JPEG") -> bytes:
    """``pixels`` (H, W, 3) uint8 encoded as ``fmt`` ("JPEG", "PNG" or "GIF")."""
    image = Image.fromarray(pixels)
    if fmt == "GIF":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


@functools.cache  # bytes never change: the fixture gallery is rebuilt for many tests
def make_flake_image(seed: int, size: tuple[int, int] = (120, 100), fmt: str = "JPEG") -> bytes:
    """Encoded bytes of ``draw_flake(seed, size)``."""
    return encode_image(draw_flake(seed, size), fmt)


@pytest.fixture
def make_image():
    """``make_image(seed, size=(120, 100), fmt="JPEG") -> bytes``: a synthetic flake."""
    return make_flake_image


# --- The server -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedRequest:
    """One request the server received; ``path`` is percent-decoded, without the query."""

    method: str
    path: str
    query: str
    user_agent: str
    host: str
    time: float


#: Bounds of every test server: requests answered before it only says 503, seconds it lives,
#: and seconds one trickled answer may last.
MAX_REQUESTS = 500
SERVER_LIFETIME_S = 300.0
TRICKLE_LIMIT_S = 20.0


@dataclass(frozen=True)
class CannedResponse:
    """An answer sent exactly as given (see ``GalleryServer.respond``)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    trickle_s: float


class _GalleryHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, handler) -> None:
        super().__init__(address, handler)
        self.lock = threading.Lock()
        self.log: list[LoggedRequest] = []
        self.failures: dict[str, list[int]] = {}  # path -> [remaining, status]
        self.content_types: dict[str, str] = {}
        self.truncated: set[str] = set()
        self.canned: dict[str, CannedResponse] = {}
        self.bytes_sent: dict[str, int] = {}
        self.max_requests = MAX_REQUESTS


class _Handler(SimpleHTTPRequestHandler):
    server: _GalleryHTTPServer

    def log_message(self, format, *args) -> None:  # noqa: A002 - keep test output quiet
        pass

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        server = self.server
        with server.lock:
            server.log.append(
                LoggedRequest(
                    self.command,
                    path,
                    parts.query,
                    self.headers.get("User-Agent", ""),
                    self.headers.get("Host", ""),
                    time.monotonic(),
                )
            )
            failure = server.failures.get(path)
            status = None
            if failure and failure[0] > 0:
                failure[0] -= 1
                status = failure[1]
            if len(server.log) > server.max_requests:
                status = 503  # a runaway client gets nothing more
        if status is not None:
            self.send_error(status)
            return
        if path in server.canned:
            self._send_canned(path, server.canned[path], send_body)
        elif path in server.truncated or path in server.content_types:
            self._send_quirky(path, send_body)
        elif send_body:
            super().do_GET()
        else:
            super().do_HEAD()

    def _send_canned(self, path: str, canned: CannedResponse, send_body: bool) -> None:
        self.send_response(canned.status)
        for name, value in canned.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(canned.body)))
        self.end_headers()
        self.close_connection = True
        if not send_body:
            return
        step = 1 if canned.trickle_s else len(canned.body) or 1
        give_up = time.monotonic() + TRICKLE_LIMIT_S
        sent = 0
        try:
            while sent < len(canned.body) and time.monotonic() < give_up:
                self.wfile.write(canned.body[sent : sent + step])
                self.wfile.flush()
                sent += step
                with self.server.lock:
                    self.server.bytes_sent[path] = sent
                time.sleep(canned.trickle_s)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up: what a bounded client does

    def _send_quirky(self, path: str, send_body: bool) -> None:
        file = Path(self.translate_path(self.path))
        if not file.is_file():
            self.send_error(404)
            return
        data = file.read_bytes()
        declared = len(data) + 1000 if path in self.server.truncated else len(data)
        self.send_response(200)
        self.send_header("Content-Type", self.server.content_types.get(path, self.guess_type(path)))
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        if send_body:
            self.wfile.write(data)
            self.wfile.flush()
        self.close_connection = True


class GalleryServer:
    """A loopback web server for tests; see the module docstring for the API."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        handler = functools.partial(_Handler, directory=os.fspath(root))
        self._server = _GalleryHTTPServer(("127.0.0.1", 0), handler)
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        # A short poll interval keeps shutdown (once per test) fast.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        # Whatever happens to the test, the server does not outlive this.
        self._watchdog = threading.Timer(SERVER_LIFETIME_S, self._server.shutdown)
        self._watchdog.daemon = True
        self._watchdog.start()

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` (which starts with ``/``) on this server."""
        return self.base_url + path

    def _file(self, path: str) -> Path:
        file = self.root / unquote(path).lstrip("/")
        file.parent.mkdir(parents=True, exist_ok=True)
        return file

    def add_file(self, path: str, data: bytes) -> Path:
        """Serve ``data`` at URL path ``path``; returns the file written."""
        file = self._file(path)
        file.write_bytes(data)
        return file

    def add_page(self, path: str, html: str) -> Path:
        """Serve the UTF-8 ``html`` at URL path ``path`` (``.html``: served as text/html)."""
        return self.add_file(path, html.encode("utf-8"))

    def add_image(
        self, path: str, seed: int, size: tuple[int, int] = (120, 100), fmt: str = "JPEG"
    ) -> bytes:
        """Serve a synthetic flake at ``path``; returns its bytes."""
        data = make_flake_image(seed, size, fmt)
        self.add_file(path, data)
        return data

    def fail_first(self, path: str, times: int, status: int = 500) -> None:
        """Answer ``status`` to the first ``times`` requests of ``path``."""
        with self._server.lock:
            self._server.failures[unquote(path)] = [times, status]

    def serve_as(self, path: str, content_type: str) -> None:
        """Send the file at ``path`` with this Content-Type, whatever it holds."""
        self._server.content_types[unquote(path)] = content_type

    def truncate_body(self, path: str) -> None:
        """Declare a Content-Length 1000 bytes larger than the file at ``path``, then close."""
        self._server.truncated.add(unquote(path))

    def respond(
        self,
        path: str,
        body: bytes = b"",
        status: int = 200,
        headers: dict[str, str] | None = None,
        trickle_s: float = 0.0,
    ) -> None:
        """Answer ``path`` with exactly this status, headers and body (Content-Length is added);
        ``trickle_s > 0`` sends the body one byte at a time, pausing that long after each."""
        canned = CannedResponse(status, tuple((headers or {}).items()), body, trickle_s)
        self._server.canned[unquote(path)] = canned

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        """Answer ``path`` with a redirect to ``location`` (sent as given, even if malformed)."""
        self.respond(path, status=status, headers={"Location": location})

    def serve_gzip(self, path: str, body: bytes, content_type: str = "text/html") -> None:
        """Send ``body`` at ``path`` with ``Content-Encoding: gzip`` (``body`` is sent as is:
        pass ``gzip.compress(...)``, or anything else for a broken gzip stream)."""
        headers = {"Content-Type": content_type, "Content-Encoding": "gzip"}
        self.respond(path, body, headers=headers)

    def sent(self, path: str) -> int:
        """Body bytes sent for the last answer to a ``respond`` path (0 before any)."""
        with self._server.lock:
            return self._server.bytes_sent.get(unquote(path), 0)

    @property
    def log(self) -> list[LoggedRequest]:
        with self._server.lock:
            return list(self._server.log)

    def count(self, path: str, method: str = "GET") -> int:
        """How many ``method`` requests of ``path`` (percent-decoded, no query) arrived."""
        path = unquote(path)
        return sum(1 for entry in self.log if entry.path == path and entry.method == method)

    def paths(self, method: str = "GET") -> list[str]:
        """Requested paths in arrival order."""
        return [entry.path for entry in self.log if entry.method == method]

    def clear_log(self) -> None:
        with self._server.lock:
            self._server.log.clear()

    def stop(self) -> None:
        self._watchdog.cancel()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@contextlib.contextmanager
def serving(root: Path) -> Iterator[GalleryServer]:
    """A ``GalleryServer`` serving ``root`` for the duration of the block, then stopped."""
    server = GalleryServer(root)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gallery_server(tmp_path):
    """An empty ``GalleryServer`` on 127.0.0.1 serving ``tmp_path / "site"``."""
    with serving(tmp_path / "site") as server:
        yield server


@pytest.fixture
def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens: connections are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/gallery/index.html"


# --- The standard fixture gallery -------------------------------------------------------------

FOLDER = "/~flakes/met/snow/"


@dataclass
class SnowGallery:
    """The standard fixture gallery; see the module docstring."""

    server: GalleryServer
    index_url: str
    expected_sha256: frozenset[str]
    expected_urls: frozenset[str]
    expected_skips: dict[str, str]
    image_paths: frozenset[str]
    never_requested: frozenset[str]
    skipped_pages: dict[str, str]
    deep_sha256: str
    photos: dict[str, bytes] = field(default_factory=dict)


def _page(title: str, body: str) -> str:
    return f"<html><head><title>{title}</title></head><body>\n{body}\n</body></html>\n"


def build_snow_gallery(server: GalleryServer) -> SnowGallery:
    """Write the standard fixture gallery into ``server`` and configure its quirks."""
    other_site = f"http://localhost:{server.port}"  # another host name: another site
    f = FOLDER
    photos = {
        # URL path -> bytes of the full-size photos that must be saved
        f + "photos/plate-a.jpg": server.add_image(f + "photos/plate-a.jpg", 1),
        f + "photos/flake 1.jpg": server.add_image(f + "photos/flake 1.jpg", 2),
        f + "photos/COLUMN.JPG": server.add_image(f + "photos/COLUMN.JPG", 3),
        f + "photos/overview.gif": server.add_image(f + "photos/overview.gif", 4, fmt="GIF"),
        f + "photos/dendrite.jpg": server.add_image(f + "photos/dendrite.jpg", 5),
        "/images/archive/stellar.jpeg": server.add_image("/images/archive/stellar.jpeg", 6),
        f + "photos/star.png": server.add_image(f + "photos/star.png", 7, fmt="PNG"),
        f + "photos/retry.jpg": server.add_image(f + "photos/retry.jpg", 8),
        f + "sub/needle.jpg": server.add_image(f + "sub/needle.jpg", 9),
    }
    # Thumbnails are big enough to be kept if the scraper wrongly took them.
    thumbs = [f + "thumbs/plate-a.jpg", f + "thumbs/flake 1.jpg", f + "sub/needle-thumb.jpg"]
    for seed, path in enumerate(thumbs, start=100):
        server.add_image(path, seed, size=(80, 80))
    server.add_file(f + "photos/copy-of-plate-a.jpg", photos[f + "photos/plate-a.jpg"])
    server.add_image("/images/eiu-logo.png", 20, size=(16, 16), fmt="PNG")
    server.add_image("/images/spacer.gif", 21, size=(16, 16), fmt="GIF")
    server.add_page(f + "photos/fake.jpg", _page("Not found", "<p>Sorry, no such photo.</p>"))
    server.serve_as(f + "photos/fake.jpg", "image/jpeg")
    server.add_image(f + "photos/soft.jpg", 22)
    server.serve_as(f + "photos/soft.jpg", "text/html")
    broken = make_flake_image(23)
    server.add_file(f + "photos/broken.jpg", broken[: len(broken) // 2])
    server.add_image(f + "photos/cut.jpg", 24)
    server.truncate_body(f + "photos/cut.jpg")
    server.add_image(f + "photos/secret.jpg", 25)
    server.add_image("/images/remote.jpg", 26)
    server.add_image(f + "private/p.jpg", 27)
    server.add_image("/~flakes/met/other/outside.jpg", 28)
    deep = server.add_image(f + "photos/deep.jpg", 29)
    server.fail_first(f + "photos/retry.jpg", 2, status=500)

    server.add_file(
        "/robots.txt",
        f"User-agent: *\nDisallow: {f}private/\nDisallow: {f}photos/secret.jpg\n".encode(),
    )
    server.add_page(
        f + "images.html",
        _page(
            "Snow crystal images",
            f"""<h1>Snow crystals</h1>
<img src="/images/eiu-logo.png" alt="logo">
<ul>
<li><a href="plates.html">Plates</a></li>
<li><a href="{f}columns.html#top">Columns</a></li>
<li><a href="{server.base_url}{f}sub/needles.html">Needles</a></li>
<li><a href="private/hidden.html">Hidden</a></li>
<li><a href="gone.html">Gone</a></li>
<li><a href="images.html">Home</a> <a href="#top">Top</a></li>
<li><a href="../other/page.html">Other topics</a></li>
<li><a href="{other_site}{f}plates2.html">Mirror</a></li>
<li><a href="mailto:someone@example.org">Mail</a></li>
<li><a href="photos/overview.gif">Overview (GIF)</a></li>
</ul>""",
        ),
    )
    server.add_page(
        f + "plates.html",
        _page(
            "Plates",
            """<a href="photos/plate-a.jpg"><img src="thumbs/plate-a.jpg"></a>
<a href="photos/flake%201.jpg"><img src="thumbs/flake%201.jpg" alt="flake 1"></a>
<img src="photos/flake 1.jpg?v=2">
<a href="photos/COLUMN.JPG">A column (uppercase name)</a>
<img src="/images/spacer.gif" width="1" height="1">
<a href="images.html">Back to the index</a>""",
        ),
    )
    server.add_page(
        f + "columns.html",
        _page(
            "Columns",
            f"""<a href="{server.base_url}{f}photos/plate-a.jpg#x">
  <img src="thumbs/plate-a.jpg"></a>
<img src="photos/copy-of-plate-a.jpg">
<img src="../snow/photos/dendrite.jpg">
<img src="/images/archive/stellar.jpeg">
<img src="photos/star.png">
<img src="photos/retry.jpg">
<img src="photos/missing.jpg">
<img src="photos/fake.jpg">
<img src="photos/soft.jpg">
<img src="photos/broken.jpg">
<img src="photos/cut.jpg">
<img src="photos/secret.jpg">
<img src="{other_site}/images/remote.jpg">
<a href="deeper.html">Deeper</a> <a href="images.html">Index</a>""",
        ),
    )
    server.add_page(
        f + "sub/needles.html",
        _page("Needles", '<a href="needle.jpg?size=full"><img src="needle-thumb.jpg"></a>'),
    )
    server.add_page(f + "deeper.html", _page("Deeper", '<img src="photos/deep.jpg">'))
    server.add_page(f + "private/hidden.html", _page("Hidden", '<img src="p.jpg">'))
    server.add_page("/~flakes/met/other/page.html", _page("Other", '<img src="outside.jpg">'))
    server.add_page(f + "plates2.html", _page("Mirror", '<img src="/images/remote.jpg">'))

    site = server.base_url
    expected_skips = {
        "/images/eiu-logo.png": "too small (16x16)",
        "/images/spacer.gif": "too small (16x16)",
        f + "photos/missing.jpg": "HTTP 404",
        f + "photos/fake.jpg": "not an image (HTML)",
        f + "photos/soft.jpg": "not an image (text/html)",
        f + "photos/broken.jpg": "truncated",
        f + "photos/cut.jpg": "truncated",
        f + "photos/secret.jpg": "robots.txt",
    }
    expected_skips = {_quoted(site + path): reason for path, reason in expected_skips.items()}
    expected_skips[f"{other_site}/images/remote.jpg"] = "other site"
    image_paths = set(photos) | {f + "photos/copy-of-plate-a.jpg"}
    image_paths |= {"/images/eiu-logo.png", "/images/spacer.gif"}
    never = set(thumbs) | {f + "photos/secret.jpg", f + "private/hidden.html", f + "private/p.jpg"}
    never |= {"/images/remote.jpg", "/~flakes/met/other/page.html", f + "plates2.html"}
    never |= {"/~flakes/met/other/outside.jpg", f + "photos/deep.jpg", f + "deeper.html"}
    return SnowGallery(
        server=server,
        index_url=server.url(f + "images.html"),
        expected_sha256=frozenset(_sha256(data) for data in photos.values()),
        expected_urls=frozenset(_quoted(site + path) for path in photos),
        expected_skips=expected_skips,
        image_paths=frozenset(image_paths),
        never_requested=frozenset(never),
        skipped_pages={
            _quoted(site + f + "private/hidden.html"): "robots.txt",
            _quoted(site + f + "gone.html"): "HTTP 404",
        },
        deep_sha256=_sha256(deep),
        photos=photos,
    )


def _quoted(url: str) -> str:
    """The canonical spelling of a fixture URL (the only character needing escapes is space)."""
    return url.replace(" ", "%20")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def snow_gallery(gallery_server) -> SnowGallery:
    """``gallery_server`` filled with the standard fixture gallery (see the module docstring)."""
    return build_snow_gallery(gallery_server)


@pytest.fixture
def gallery_expected_sha256(snow_gallery) -> frozenset[str]:
    """SHA-256 of exactly the distinct full-size photos a depth-1 scrape must save."""
    return snow_gallery.expected_sha256


NOTEBOOK_DIR = Path(__file__).parents[1] / "notebooks"


@pytest.fixture
def run_notebook(tmp_path):
    """Execute a notebook of ``notebooks/`` top to bottom with papermill; return its output.

    ``run_notebook(name, **parameters)`` runs it in ``notebooks/`` (as ``make run`` does) with
    the given parameters, writes the executed copy to ``tmp_path / "out.ipynb"`` and returns
    that file's text. A failing cell raises ``papermill.PapermillExecutionError``.
    """

    def run(name: str, **parameters) -> str:
        output = tmp_path / "out.ipynb"
        papermill.execute_notebook(
            NOTEBOOK_DIR / name,
            output,
            cwd=NOTEBOOK_DIR,
            progress_bar=False,
            kernel_name="python3",
            parameters=parameters,
        )
        return output.read_text()

    return run


# --- The hostile gallery ----------------------------------------------------------------------

HOSTILE = "/h/"


@pytest.fixture
def elsewhere_server(tmp_path):
    """A second ``GalleryServer`` (another port: another site) for off-site redirects."""
    with serving(tmp_path / "elsewhere") as server:
        yield server


@dataclass
class HostileGallery:
    """The hostile fixture gallery: see ``build_hostile_gallery``."""

    server: GalleryServer
    elsewhere: GalleryServer
    index_url: str
    expected_sha256: frozenset[str]
    image_skips: dict[str, str]
    page_skips: dict[str, str]
    malformed_links: frozenset[str]


def build_hostile_gallery(server: GalleryServer, elsewhere: GalleryServer) -> HostileGallery:
    """A gallery at ``/h/index.html`` where every page and image but four is a trap.

    Good: ``good1.jpg``, ``good2.png``, ``moved.jpg`` (redirects inside the gallery) and
    ``new.jpg`` on ``new.html`` (reached through ``old.html``, a 301 inside the gallery).
    Traps, each to be skipped with its reason: redirects to itself, in a circle, in a chain of
    seven, to ``file://``, to the other server, into a robots.txt-disallowed folder, to a
    malformed URL; gzip bodies that are not gzip; gzip bombs (a page inflating to
    ``BOMB_BYTES``, an image above ``scrape.MAX_IMAGE_BYTES``); malformed links (a broken IPv6
    host, a port out of range). ``elsewhere`` serves a page and images that must never be
    requested.
    """
    h, other = HOSTILE, elsewhere.base_url
    good = {
        h + "good1.jpg": server.add_image(h + "good1.jpg", 201),
        h + "good2.png": server.add_image(h + "good2.png", 202, fmt="PNG"),
        h + "photos/moved-target.jpg": server.add_image(h + "photos/moved-target.jpg", 203),
        h + "new.jpg": server.add_image(h + "new.jpg", 204),
    }
    elsewhere.add_image(h + "away.jpg", 205)
    elsewhere.add_image(h + "x.jpg", 206)
    elsewhere.add_page(h + "page.html", _page("Elsewhere", '<img src="x.jpg">'))
    server.add_image(h + "private/x.jpg", 207)
    server.add_page(h + "private/page.html", _page("Private", '<img src="x.jpg">'))
    server.add_file("/robots.txt", f"User-agent: *\nDisallow: {h}private/\n".encode())

    server.redirect(h + "moved.jpg", h + "photos/moved-target.jpg")
    server.redirect(h + "away.jpg", other + h + "away.jpg")
    server.redirect(h + "secret.jpg", h + "private/x.jpg")
    server.redirect(h + "file.jpg", "file:///etc/hosts")
    server.redirect(h + "selfloop.jpg", h + "selfloop.jpg")
    server.serve_gzip(h + "badgzip.jpg", make_flake_image(208), content_type="image/jpeg")
    server.serve_gzip(h + "bomb.jpg", gzip_bomb(), content_type="image/jpeg")

    server.redirect(h + "old.html", "new.html", status=301)
    server.add_page(h + "new.html", _page("New", '<img src="new.jpg">'))
    server.redirect(h + "loop.html", h + "loop.html")
    server.redirect(h + "ping.html", h + "pong.html", status=307)
    server.redirect(h + "pong.html", h + "ping.html", status=308)
    for step in range(7):
        server.redirect(f"{h}chain{step}.html", f"{h}chain{step + 1}.html")
    server.redirect(h + "file.html", "file:///etc/passwd")
    server.redirect(h + "off.html", other + h + "page.html")
    server.redirect(h + "hidden.html", h + "private/page.html")
    server.redirect(h + "badlocation.html", "http://[oops/x.html")
    server.serve_gzip(h + "badgzip.html", b"<html>plain text, not gzip</html>")
    server.serve_gzip(h + "bomb.html", gzip_bomb())

    page_skips = {
        "loop.html": "redirect loop",
        "ping.html": "redirect loop",
        "chain0.html": "too many redirects",
        "file.html": "redirect not http(s)",
        "off.html": "redirect outside the gallery",
        "hidden.html": "redirect disallowed by robots.txt",
        "badlocation.html": "bad redirect",
        "badgzip.html": "undecodable body",
        "bomb.html": "too large",
    }
    image_skips = {
        "away.jpg": "redirect outside the gallery",
        "secret.jpg": "redirect disallowed by robots.txt",
        "file.jpg": "redirect not http(s)",
        "selfloop.jpg": "redirect loop",
        "badgzip.jpg": "undecodable body",
        "bomb.jpg": "too large",
    }
    malformed = ["http://[oops/p.html", "http://127.0.0.1:99999/p.html"]
    malformed += ["http://[oops/i.jpg", "http://127.0.0.1:70000/i.jpg"]
    page_links = [*page_skips, "old.html", malformed[0], malformed[1]]
    image_skips[other + h + "x.jpg"] = "other site"  # a plain link to the other server
    image_links = ["good1.jpg", "good2.png", "moved.jpg", *image_skips, *malformed[2:]]
    server.add_page(
        h + "index.html",
        _page(
            "A hostile gallery",
            "\n".join(f'<a href="{link}">{link}</a>' for link in page_links)
            + "\n"
            + "\n".join(f'<img src="{link}">' for link in image_links),
        ),
    )
    site = server.base_url + h
    return HostileGallery(
        server=server,
        elsewhere=elsewhere,
        index_url=server.url(h + "index.html"),
        expected_sha256=frozenset(_sha256(data) for data in good.values()),
        image_skips={urljoin(site, name): reason for name, reason in image_skips.items()},
        page_skips={site + name: reason for name, reason in page_skips.items()},
        malformed_links=frozenset(malformed),
    )


@pytest.fixture
def hostile_gallery(gallery_server, elsewhere_server) -> HostileGallery:
    """``gallery_server`` and ``elsewhere_server`` filled by ``build_hostile_gallery``."""
    return build_hostile_gallery(gallery_server, elsewhere_server)


# --- The demo set -----------------------------------------------------------------------------


@pytest.fixture
def demo_flakes(tmp_path):
    """A folder of 12 synthetic demo crystals, 96 pixels square, with their manifest (so runs
    on it are demo runs): ``tmp_path / "flakes"``."""
    folder = tmp_path / "flakes"
    demo.make_demo_set(folder, count=12, side=96, progress=False)
    return folder


@pytest.fixture
def two_node_cluster():
    """A Ray cluster of two nodes on this machine (loopback), 2 CPUs each; shut down after."""
    from snowflake_tools import ray_extract

    os.environ[ray_extract.LOOPBACK_SWITCH] = "0"  # before Ray is imported: loopback only
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        ray_extract.stop_ray()
        cluster.shutdown()
