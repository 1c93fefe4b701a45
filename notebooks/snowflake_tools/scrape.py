"""Polite crawling and downloading of a snow-crystal photo gallery (notebook 01).

Notebook 01 runs the steps one cell at a time; ``download_gallery`` runs them all:

1. ``make_session``         -- one HTTP session: User-Agent, timeouts, retries, delay, robots.txt
2. ``fetch_html``           -- the index page as text
3. ``find_gallery_pages``   -- the index plus the pages it links to in the same folder tree
4. ``collect_image_links``  -- every image URL on those pages, full-size rather than thumbnail
5. ``download_images``      -- keep only real, large-enough, new images; returns a report
6. ``summarise_report``     -- found / saved / skipped by reason, as a small table

What lands on disk: one file per distinct image (by SHA-256 of its bytes, saved as downloaded),
``manifest.csv`` (see ``files.MANIFEST_COLUMNS``) and ``.seen_urls.csv``, a note of URLs whose
image is known to be a duplicate or too small, so that a re-run does not fetch them again.
"""

from __future__ import annotations

import io
import posixpath
import re
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, unquote_to_bytes, urljoin, urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser

import pandas as pd
import requests
from bs4 import BeautifulSoup, UnicodeDammit
from PIL import Image, ImageFile, UnidentifiedImageError
from requests.adapters import HTTPAdapter
from tqdm.auto import tqdm
from urllib3.util.retry import Retry

from snowflake_tools import files

#: Sent with every request so the site's owners can see who is asking and why.
USER_AGENT = "snowflake-uniqueness-tutorial/1.0 (educational; polite scraper)"

#: (connect, read) timeouts in seconds for every request.
DEFAULT_TIMEOUT = (10.0, 30.0)

#: HTTP statuses worth asking again for: the server's trouble, not ours.
RETRY_STATUSES = (500, 502, 503, 504)

#: Bodies larger than this (bytes) are not photos of a snow crystal; they are not downloaded.
MAX_IMAGE_BYTES = 50 * 1024 * 1024

#: Pillow formats that are kept, with the file ending added when the URL has none.
IMAGE_FORMATS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif"}

#: Path endings of links that are followed as gallery pages (besides folders and bare names).
PAGE_SUFFIXES = (".html", ".htm", ".shtml", ".xhtml", ".php", ".asp", ".aspx", ".cfm", ".jsp")

#: Columns of the report that ``download_images`` returns, one row per image URL or skipped page.
REPORT_COLUMNS = [
    "kind",
    "url",
    "page",
    "status",
    "reason",
    "file",
    "sha256",
    "width",
    "height",
]

#: File beside the manifest remembering URLs whose (valid) image was not saved.
SEEN_NAME = ".seen_urls.csv"
SEEN_COLUMNS = ["url", "status", "reason", "sha256", "width", "height"]

_DEMO_HINT = 'set SOURCE="demo" in the notebook\'s parameters cell to use synthetic snowflakes'


class GalleryUnreachableError(ConnectionError):
    """The gallery's index cannot be fetched: no network, wrong URL, or the site is down."""

    def __init__(self, url: str, cause: object) -> None:
        self.url = url
        super().__init__(
            f"Cannot reach the snowflake gallery at {url} ({cause}). Check the internet "
            f"connection and the URL, or {_DEMO_HINT}."
        )


class NoImagesFoundError(RuntimeError):
    """The gallery was reached but yielded no usable image. ``report`` holds what was tried."""

    def __init__(self, message: str, report: pd.DataFrame | None = None) -> None:
        self.report = report
        super().__init__(message)


class PageSkippedError(RuntimeError):
    """One page could not be used; ``reason`` says why (``"HTTP 404"``, ``"robots.txt"``...)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"Skipped {url}: {reason}")


class ImageRejectedError(ValueError):
    """Downloaded bytes are not a usable image; ``reason`` is the report's wording."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class ImageLink:
    """One image found on a gallery page.

    ``url`` is the canonical URL of the full-size image, ``page`` the page it was found on and
    ``thumbnail_url`` the small ``<img>`` shown in its place, if any (never downloaded).
    """

    url: str
    page: str
    thumbnail_url: str | None = None


# --- URLs -------------------------------------------------------------------------------------

_PATH_SAFE = "!$&'()*+,;=:@"


def canonical_url(url: str, keep_query: bool = False) -> str:
    """One spelling per resource: what lets two links to the same file count as one.

    Lower-case scheme and host, no default port, ``.``/``..`` resolved, percent-encoding
    normalised (``flake%201.jpg`` and ``flake 1.jpg`` are one file), no fragment, and no query
    unless ``keep_query`` (``a.jpg?v=2`` is ``a.jpg``; pages keep theirs).
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and (scheme, port) not in {("http", 80), ("https", 443)}:
        host = f"{host}:{port}"
    segments = [
        quote(unquote_to_bytes(segment), safe=_PATH_SAFE) for segment in parts.path.split("/")
    ]
    path = _remove_dot_segments(segments) or "/"
    query = parts.query if keep_query else ""
    return urlunsplit((scheme, host, path, query, ""))


def _remove_dot_segments(segments: list[str]) -> str:
    kept: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                kept.append("")
        elif segment == "..":
            if len(kept) > 1:
                kept.pop()
            if last:
                kept.append("")
        else:
            kept.append(segment)
    return "/".join(kept)


def is_image_url(url: str) -> bool:
    """True when the URL's path (not its query) ends in ``.jpg/.jpeg/.png/.gif``, any case."""
    return files.is_image_name(urlsplit(url).path)


def same_site(url: str, other: str) -> bool:
    """True when both URLs have the same scheme, host and port."""
    first, second = urlsplit(canonical_url(url)), urlsplit(canonical_url(other))
    return (first.scheme, first.netloc) == (second.scheme, second.netloc)


def is_in_gallery(url: str, index_url: str) -> bool:
    """True when ``url`` is on the index's site and under the index's folder.

    For ``https://host/~a/met/snow/images.html`` the folder is ``/~a/met/snow/``, so
    ``/~a/met/snow/sub/p.html`` is in the gallery and ``/~a/met/other.html`` is not.
    """
    if not same_site(url, index_url):
        return False
    folder = posixpath.dirname(urlsplit(canonical_url(index_url)).path).rstrip("/") + "/"
    return urlsplit(canonical_url(url)).path.startswith(folder)


def _looks_like_page(url: str) -> bool:
    last_segment = urlsplit(url).path.rsplit("/", 1)[-1].lower()
    return "." not in last_segment or last_segment.endswith(PAGE_SUFFIXES)


def _resolve(base_url: str, reference: str | None, keep_query: bool = False) -> str | None:
    """Absolute canonical http(s) URL of ``reference`` as seen from ``base_url``, or None."""
    if not reference or not reference.strip():
        return None
    absolute = urljoin(base_url, reference.strip())
    if urlsplit(absolute).scheme.lower() not in ("http", "https"):
        return None  # mailto:, javascript:, data: ...
    return canonical_url(absolute, keep_query=keep_query)


def _base_url(page_url: str, soup: BeautifulSoup) -> str:
    base = soup.find("base", href=True)
    return urljoin(page_url, base["href"]) if base else page_url


# --- Parsing (no network) ---------------------------------------------------------------------


def find_page_links(page_url: str, html: str) -> list[str]:
    """URLs of the HTML pages that ``html`` (found at ``page_url``) links to, in page order.

    Reads ``<a href>``, ``<area href>`` and ``<frame>``/``<iframe>`` ``src``; keeps http(s)
    links that look like pages (``.html``, ``.php``..., a folder or a bare name), never image
    links. Canonical, fragment dropped, query kept, each URL once. Scope (same site and folder)
    is for the caller: see ``is_in_gallery``.
    """
    soup = BeautifulSoup(html, "html.parser")
    base = _base_url(page_url, soup)
    links: dict[str, None] = {}
    for tag in soup.find_all(["a", "area", "frame", "iframe"]):
        reference = tag.get("href") if tag.name in ("a", "area") else tag.get("src")
        url = _resolve(base, reference, keep_query=True)
        if url and not is_image_url(url) and _looks_like_page(url):
            links.setdefault(url, None)
    return list(links)


def find_image_links(page_url: str, html: str) -> list[ImageLink]:
    """The images that ``html`` (found at ``page_url``) shows or links to, in page order.

    Every ``<img src>`` and every ``<a href>`` whose path ends in an image suffix. When an
    ``<img>`` sits inside an ``<a href>`` to an image, the link is the full-size photo and the
    ``<img>`` only its thumbnail, so only the link is kept. URLs are canonical (see
    ``canonical_url``), each once; links to other sites are kept (``download_images`` skips them).
    """
    soup = BeautifulSoup(html, "html.parser")
    base = _base_url(page_url, soup)
    page = canonical_url(page_url, keep_query=True)
    thumbnails: set[int] = set()
    found: dict[str, ImageLink] = {}
    for tag in soup.find_all(["a", "img"]):
        if tag.name == "a":
            url = _resolve(base, tag.get("href"))
            if not url or not is_image_url(url):
                continue
            inner = [image for image in tag.find_all("img") if _resolve(base, image.get("src"))]
            thumbnails.update(id(image) for image in inner)
            thumbnail = _resolve(base, inner[0].get("src")) if inner else None
            thumbnail = None if thumbnail == url else thumbnail
            found.setdefault(url, ImageLink(url=url, page=page, thumbnail_url=thumbnail))
        elif id(tag) not in thumbnails:
            url = _resolve(base, tag.get("src"))
            if url:
                found.setdefault(url, ImageLink(url=url, page=page))
    return list(found.values())


# --- The session ------------------------------------------------------------------------------


class PoliteSession:
    """A ``requests.Session`` that behaves: identifies itself, waits, retries, obeys robots.txt.

    - every request sends ``user_agent`` and uses ``timeout`` (seconds, or (connect, read));
    - connection errors and 5xx answers are retried ``retries`` times, waiting
      ``backoff * 2**(n-1)`` seconds before the n-th retry (urllib3 ``Retry``);
    - consecutive requests to one site are at least ``request_delay_s`` seconds apart;
    - ``allowed(url)`` reads each site's robots.txt once (missing robots.txt: all allowed).

    It also remembers, for ``fetch_html``, the pages already fetched (``html``) and the pages
    that could not be used (``skipped_pages``, rows for the report).
    """

    def __init__(
        self,
        user_agent: str = USER_AGENT,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        retries: int = 3,
        backoff: float = 0.5,
        request_delay_s: float = 1.0,
    ) -> None:
        if request_delay_s < 0 or backoff < 0 or retries < 0:
            raise ValueError("retries, backoff and request_delay_s must be zero or more.")
        self.user_agent = user_agent
        self.timeout = timeout
        self.request_delay_s = request_delay_s
        self.retries = retries
        self.http = requests.Session()
        self.http.headers["User-Agent"] = user_agent
        retry = Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            other=0,
            backoff_factor=backoff,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET", "HEAD"}),
            raise_on_status=False,  # the last 5xx answer is returned, and reported as such
            retry_after_max=60,
        )
        adapter = HTTPAdapter(max_retries=retry)
        self.http.mount("http://", adapter)
        self.http.mount("https://", adapter)
        self.html: dict[str, tuple[str, str]] = {}
        self.skipped_pages: list[dict] = []
        self._robots: dict[str, RobotFileParser] = {}
        self._last_request: dict[str, float] = {}
        self._lock = threading.Lock()

    def get(self, url: str, **kwargs) -> requests.Response:
        """GET ``url`` after waiting out the delay for its site; returns the final response."""
        site = urlsplit(url).netloc
        with self._lock:
            wait = self._last_request.get(site, -float("inf")) + self.request_delay_s
            pause = wait - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        try:
            return self.http.get(url, timeout=self.timeout, **kwargs)
        finally:
            with self._lock:
                self._last_request[site] = time.monotonic()

    def allowed(self, url: str) -> bool:
        """True when the site's robots.txt lets this User-Agent fetch ``url``."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._robots:
            self._robots[origin] = self._read_robots(origin + "/robots.txt")
        return self._robots[origin].can_fetch(self.user_agent, url)

    def _read_robots(self, robots_url: str) -> RobotFileParser:
        # Fetched through this session (not RobotFileParser.read) so that it is identified,
        # delayed and retried like any other request. Rules as in RFC 9309.
        parser = RobotFileParser(robots_url)
        response = self.get(robots_url)
        if response.status_code in (401, 403) or response.status_code >= 500:
            parser.disallow_all = True
        elif response.status_code >= 400:
            parser.allow_all = True
        else:
            parser.parse(response.text.splitlines())
        return parser

    def __repr__(self) -> str:
        return (
            f"PoliteSession(user_agent={self.user_agent!r}, timeout={self.timeout} s, "
            f"retries={self.retries}, request_delay_s={self.request_delay_s})"
        )

    def close(self) -> None:
        """Close the underlying connections."""
        self.http.close()

    def __enter__(self) -> PoliteSession:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def make_session(
    user_agent: str = USER_AGENT,
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
    retries: int = 3,
    backoff: float = 0.5,
    request_delay_s: float = 1.0,
) -> PoliteSession:
    """A ``PoliteSession``: see its docstring for what each argument does."""
    return PoliteSession(user_agent, timeout, retries, backoff, request_delay_s)


def site_is_reachable(url: str, timeout: float = 5.0, user_agent: str = USER_AGENT) -> bool:
    """True when one GET of ``url`` answers 2xx within ``timeout`` seconds (no retries).

    Cheap enough for notebook 01's ``SOURCE = "auto"``: the body is not read.
    """
    try:
        with requests.get(
            url, timeout=timeout, stream=True, headers={"User-Agent": user_agent}
        ) as response:
            return response.ok
    except requests.RequestException:
        return False


# --- Pages ------------------------------------------------------------------------------------


def fetch_html(session: PoliteSession, url: str) -> str:
    """The HTML text of the page at ``url``, fetched once per session.

    Raises ``GalleryUnreachableError`` when the site does not answer (after retries) and
    ``PageSkippedError`` when it answers but the page cannot be used (``reason``: robots.txt,
    ``HTTP 404``, not HTML, truncated).
    """
    url = canonical_url(url, keep_query=True)
    if url in session.html:
        return session.html[url][1]
    try:
        if not session.allowed(url):
            raise PageSkippedError(url, "robots.txt")
        with session.get(url) as response:
            if response.status_code != 200:
                raise PageSkippedError(url, f"HTTP {response.status_code}")
            content_type = _content_type(response)
            if content_type and content_type not in ("text/html", "application/xhtml+xml"):
                raise PageSkippedError(url, f"not HTML ({content_type})")
            text = _decode_html(response)
            final_url = canonical_url(response.url, keep_query=True)
    except requests.exceptions.ChunkedEncodingError as error:
        raise PageSkippedError(url, "truncated") from error
    except (requests.ConnectionError, requests.Timeout) as error:
        raise GalleryUnreachableError(url, _describe(error)) from error
    session.html[url] = (final_url, text)
    return text


def _content_type(response: requests.Response) -> str:
    return response.headers.get("Content-Type", "").split(";")[0].strip().lower()


def _decode_html(response: requests.Response) -> str:
    if "charset=" in response.headers.get("Content-Type", "").lower():
        return response.text
    # Without a declared charset requests guesses Latin-1; the page's <meta> knows better.
    return UnicodeDammit(response.content, is_html=True).unicode_markup or ""


def _describe(error: BaseException) -> str:
    """The short cause of a failed request: "Connection refused", "timed out"..."""
    text = str(error)
    operating_system_says = re.search(r"\[Errno -?\d+\] ([^\"')]+)", text)
    if operating_system_says:
        return operating_system_says.group(1).strip()
    if isinstance(error, requests.Timeout):
        return "timed out"
    return f"{type(error).__name__}: {text}"[:200]


def _final_url(session: PoliteSession, url: str) -> str:
    """Where ``url`` ended up after redirects, so relative links resolve against the right place."""
    return session.html.get(canonical_url(url, keep_query=True), (url, ""))[0]


def find_gallery_pages(session: PoliteSession, index_url: str, depth: int = 1) -> list[str]:
    """The index and the gallery pages reachable from it within ``depth`` links.

    Breadth-first from the index. A link is followed when it is an HTML page on the same site
    and under the index's folder (``is_in_gallery``), each page once, so links back to the index
    or between pages do not loop. ``depth=0`` is the index alone; 1 (the default) adds the pages
    it links to, which is how the gallery is built. Pages that cannot be used (robots.txt,
    ``HTTP 404``...) are left out and noted in ``session.skipped_pages`` for the report.

    Raises ``GalleryUnreachableError`` when the index itself cannot be fetched.
    """
    if depth < 0:
        raise ValueError(f"depth must be 0 or more, got {depth}.")
    index = canonical_url(index_url, keep_query=True)
    try:
        html = fetch_html(session, index)
    except PageSkippedError as error:
        raise GalleryUnreachableError(index, f"the index page: {error.reason}") from error
    root = _final_url(session, index)
    pages, seen = [root], {index, root}
    frontier = [(root, html)]
    for _ in range(depth):
        next_frontier = []
        for page, page_html in frontier:
            for link in find_page_links(page, page_html):
                if link in seen or not is_in_gallery(link, root):
                    continue
                seen.add(link)
                try:
                    link_html = fetch_html(session, link)
                except (PageSkippedError, GalleryUnreachableError) as error:
                    reason = getattr(error, "reason", "connection failed")
                    session.skipped_pages.append(_page_row(link, page, reason))
                    continue
                final = _final_url(session, link)
                if final in seen and final != link:
                    continue  # a redirect to a page already listed
                seen.add(final)
                pages.append(final)
                next_frontier.append((final, link_html))
        frontier = next_frontier
    return pages


def _page_row(url: str, linked_from: str, reason: str) -> dict:
    return {"kind": "page", "url": url, "page": linked_from, "status": "skipped", "reason": reason}


def collect_image_links(session: PoliteSession, pages: Sequence[str]) -> list[ImageLink]:
    """Every distinct image on ``pages``, in crawl order: page by page, top to bottom.

    Runs ``find_image_links`` on each page (fetched once per session). One link per canonical
    URL; the first page in ``pages`` that shows it wins, so the order (and which of two URLs
    of one photo names the file) is the same on every run. An image that some page uses only
    as the thumbnail of a larger one is dropped. Raises ``NoImagesFoundError`` when there is
    none.
    """
    links: dict[str, ImageLink] = {}
    for page in pages:
        try:
            html = fetch_html(session, page)
        except (PageSkippedError, GalleryUnreachableError) as error:
            reason = getattr(error, "reason", "connection failed")
            session.skipped_pages.append(_page_row(canonical_url(page, True), "", reason))
            continue
        for link in find_image_links(_final_url(session, page), html):
            links.setdefault(link.url, link)
    thumbnails = {link.thumbnail_url for link in links.values()}
    found = [link for url, link in links.items() if url not in thumbnails]
    if not found:
        searched = ", ".join(pages) if pages else "no pages"
        raise NoImagesFoundError(
            f"Found no image links on the {len(pages)} page(s) searched: {searched}. Check that "
            "the index URL is the gallery's index page, that its pages show <img> tags or link "
            f"to .jpg/.jpeg/.png/.gif files, and that depth reaches them; or {_DEMO_HINT}."
        )
    return found


# --- Images -----------------------------------------------------------------------------------


def check_image(data: bytes) -> tuple[str, int, int]:
    """Decode ``data`` completely; return (Pillow format, width, height) in pixels.

    ``Image.verify()`` checks the structure, a second open and ``load()`` decodes every pixel,
    which is what catches a file cut short. Raises ``ImageRejectedError`` with the report's
    reason: ``"not an image (HTML)"``, ``"truncated"``, ``"corrupt (...)"``...
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format or ""
            image.verify()
        with warnings.catch_warnings(), _truncated_images_refused():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                width, height = image.size
    except UnidentifiedImageError as error:
        looks_like_html = data.lstrip()[:1] == b"<"
        kind = "HTML" if looks_like_html else "unrecognised data"
        raise ImageRejectedError(f"not an image ({kind})") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageRejectedError("too large (decompression bomb guard)") from error
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as error:
        if "truncat" in str(error).lower() or isinstance(error, EOFError):
            raise ImageRejectedError("truncated") from error
        raise ImageRejectedError(f"corrupt ({_describe(error)[:80]})") from error
    if image_format not in IMAGE_FORMATS:
        raise ImageRejectedError(f"unsupported format ({image_format})")
    return image_format, width, height


class _truncated_images_refused:
    """Within the block Pillow refuses truncated files, whatever another module set globally."""

    def __enter__(self) -> None:
        self._before = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False

    def __exit__(self, *exc_info) -> None:
        ImageFile.LOAD_TRUNCATED_IMAGES = self._before


def _read_body(response: requests.Response, max_bytes: int) -> bytes:
    chunks, size = [], 0
    for chunk in response.iter_content(chunk_size=1 << 16):
        size += len(chunk)
        if size > max_bytes:
            raise ImageRejectedError(f"too large (> {max_bytes // (1 << 20)} MB)")
        chunks.append(chunk)
    return b"".join(chunks)


def _file_name_for(url: str, image_format: str) -> str:
    name = files.safe_file_name(unquote(urlsplit(url).path.rsplit("/", 1)[-1]))
    if not files.is_image_name(name):
        name += IMAGE_FORMATS[image_format]
    return name


class _ImageFolder:
    """What is already in ``image_dir``: verified manifest rows, names taken, URLs judged."""

    def __init__(self, image_dir: Path) -> None:
        self.image_dir = image_dir
        self.rows: dict[str, dict] = {}  # file -> manifest row, only files present and intact
        for row in files.read_manifest(image_dir).to_dict("records"):
            path = image_dir / str(row["file"])
            if path.is_file() and files.sha256_file(path) == row["sha256"]:
                self.rows[str(row["file"])] = row
        self.file_by_url = {row["url"]: name for name, row in self.rows.items()}
        self.file_by_sha = {}
        for name, row in sorted(self.rows.items()):
            self.file_by_sha.setdefault(row["sha256"], name)
        self.taken = {path.name for path in image_dir.iterdir()}
        self.seen = {}
        seen_path = image_dir / SEEN_NAME
        if seen_path.exists():
            seen = pd.read_csv(seen_path, dtype={"url": str, "sha256": str})
            self.seen = {row["url"]: row for row in seen.to_dict("records")}

    def save_image(self, link: ImageLink, data: bytes, sha: str, size: tuple[int, int], fmt: str):
        name = _file_name_for(link.url, fmt)
        existing = self.image_dir / name
        if not (existing.is_file() and files.sha256_file(existing) == sha):
            name = files.unique_file_name(name, self.taken, tag=sha[:8])
            files.atomic_write_bytes(self.image_dir / name, data)
        # else: left by an interrupted run before its manifest was written; adopt it.
        self.taken.add(name)
        self.rows[name] = {
            "file": name,
            "url": link.url,
            "page": link.page,
            "sha256": sha,
            "width": size[0],
            "height": size[1],
        }
        self.file_by_url[link.url] = name
        self.file_by_sha.setdefault(sha, name)
        return name

    def remember(self, url: str, status: str, reason: str, sha: str, size: tuple[int, int]):
        self.seen[url] = {
            "url": url,
            "status": status,
            "reason": reason,
            "sha256": sha,
            "width": size[0],
            "height": size[1],
        }

    def write(self) -> None:
        files.write_manifest(self.image_dir, self.rows.values())
        if self.seen:
            seen = pd.DataFrame(list(self.seen.values()), columns=SEEN_COLUMNS)
            files.atomic_write_csv(seen.sort_values("url"), self.image_dir / SEEN_NAME)


def _image_row(link: ImageLink, status: str, reason: str = "", file: str = "", **extra) -> dict:
    row = {"kind": "image", "url": link.url, "page": link.page, "status": status}
    row.update(reason=reason, file=file, **extra)
    return row


def _skip(link: ImageLink, reason: str, **extra) -> dict:
    return _image_row(link, "skipped", reason, **extra)


def _too_small(size: tuple[int, int], min_side: int) -> bool:
    return min(size) < min_side


def _judge_without_request(link: ImageLink, folder: _ImageFolder, min_side: int) -> dict | None:
    """The row for ``link`` when what is on disk already answers it, else None."""
    name = folder.file_by_url.get(link.url)
    if name is not None:
        row = folder.rows[name]
        size = {"width": row["width"], "height": row["height"]}
        return _image_row(link, "already on disk", "", name, sha256=row["sha256"], **size)
    seen = folder.seen.get(link.url)
    if seen is None:
        return None
    size = (int(seen["width"]), int(seen["height"]))
    extra = {"sha256": seen["sha256"], "width": size[0], "height": size[1]}
    if seen["status"] == "skipped" and _too_small(size, min_side):
        return _skip(link, f"too small ({size[0]}x{size[1]})", **extra)
    same = folder.file_by_sha.get(seen["sha256"])
    if seen["status"] == "duplicate" and same is not None:
        return _image_row(link, "duplicate", f"same content as {same}", same, **extra)
    return None  # what made it useless has changed: fetch it again


def _download_one(
    session: PoliteSession, link: ImageLink, folder: _ImageFolder, min_side: int
) -> dict:
    """Fetch, check and save one image; the report row says what happened."""
    try:
        with session.get(link.url, stream=True) as response:
            if response.status_code != 200:
                return _skip(link, f"HTTP {response.status_code}")
            content_type = _content_type(response)
            if content_type and not content_type.startswith(("image/", "application/octet")):
                return _skip(link, f"not an image ({content_type})")
            data = _read_body(response, MAX_IMAGE_BYTES)
        image_format, width, height = check_image(data)
    except ImageRejectedError as error:
        return _skip(link, error.reason)
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError):
        return _skip(link, "truncated (connection closed early)")
    except requests.RequestException as error:
        return _skip(link, f"connection failed ({type(error).__name__})")
    sha = files.sha256_bytes(data)
    extra = {"sha256": sha, "width": width, "height": height}
    if _too_small((width, height), min_side):
        reason = f"too small ({width}x{height})"
        folder.remember(link.url, "skipped", reason, sha, (width, height))
        return _skip(link, reason, **extra)
    same = folder.file_by_sha.get(sha)
    if same is not None:
        folder.remember(link.url, "duplicate", f"same content as {same}", sha, (width, height))
        return _image_row(link, "duplicate", f"same content as {same}", same, **extra)
    name = folder.save_image(link, data, sha, (width, height), image_format)
    return _image_row(link, "saved", "", name, **extra)


def download_images(
    session: PoliteSession,
    links: Iterable[ImageLink],
    image_dir: str | Path,
    min_side: int = 64,
    max_images: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Download ``links`` into ``image_dir``; return the report, one row per URL.

    Each link ends as ``saved``, ``already on disk`` (in the manifest with intact content: not
    requested again), ``duplicate`` (same bytes as a file already kept; ``file`` names it) or
    ``skipped`` with a ``reason``: ``other site``, ``robots.txt``, ``HTTP 404``, ``not an image
    (text/html)``, ``truncated``, ``too small (16x16)`` (shorter side below ``min_side``
    pixels), ``over max_images (N)``. ``max_images`` caps the images kept (saved plus already
    on disk); None keeps all. Files are the original bytes, written atomically; ``manifest.csv``
    is merged with the one already there, even when the loop is interrupted. Pages that
    ``find_gallery_pages`` skipped head the report (``kind == "page"``).

    Raises ``NoImagesFoundError`` (with ``.report``) when no link gave a usable image.
    """
    if min_side < 1:
        raise ValueError(f"min_side must be at least 1 pixel, got {min_side}.")
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be None (all) or at least 1, got {max_images}.")
    image_dir = Path(image_dir)
    image_dir.mkdir(parents=True, exist_ok=True)
    folder = _ImageFolder(image_dir)
    rows = list(session.skipped_pages)
    links = list(links)
    kept = 0
    try:
        for link in tqdm(links, desc="Downloading", unit="image", disable=not progress):
            row = _judge_link(session, link, folder, min_side, max_images, kept)
            kept += row["status"] in ("saved", "already on disk")
            rows.append(row)
    finally:
        folder.write()
    report = pd.DataFrame(rows, columns=REPORT_COLUMNS).fillna({"reason": "", "file": ""})
    if not report["status"].isin(["saved", "already on disk", "duplicate"]).any():
        raise NoImagesFoundError(
            f"None of the {len(links)} image link(s) gave a usable image; by reason: "
            f"{_reason_counts(report)}. Check min_side ({min_side} px) and the report "
            f"(this error's .report), or {_DEMO_HINT}.",
            report,
        )
    return report


def _judge_link(
    session: PoliteSession,
    link: ImageLink,
    folder: _ImageFolder,
    min_side: int,
    max_images: int | None,
    kept: int,
) -> dict:
    if not same_site(link.url, link.page):
        return _skip(link, "other site")
    known = _judge_without_request(link, folder, min_side)
    if known is not None and known["status"] != "already on disk":
        return known
    if max_images is not None and kept >= max_images:
        return _skip(link, f"over max_images ({max_images})")
    if known is not None:
        return known
    try:
        if not session.allowed(link.url):
            return _skip(link, "robots.txt")
    except requests.RequestException as error:
        return _skip(link, f"connection failed ({type(error).__name__})")
    return _download_one(session, link, folder, min_side)


def _reason_kind(reason: str) -> str:
    """``"too small (16x16)"`` -> ``"too small"``: reasons grouped for the summary."""
    return re.sub(r"\s*\(.*\)$", "", str(reason)) or "unknown"


def _reason_counts(report: pd.DataFrame) -> str:
    skipped = report[report["status"] == "skipped"]
    counts = skipped["reason"].map(_reason_kind).value_counts()
    return ", ".join(f"{reason}: {count}" for reason, count in counts.items()) or "none"


def summarise_report(report: pd.DataFrame) -> pd.DataFrame:
    """A small table for the notebook: images found, saved, already on disk, duplicates, and
    skips by reason (pages skipped listed separately). Columns ``outcome`` and ``count``."""
    images = report[report["kind"] == "image"]
    pages = report[report["kind"] == "page"]
    rows = [("image links found", len(images))]
    for status in ("saved", "already on disk", "duplicate"):
        rows.append((status, int((images["status"] == status).sum())))
    for prefix, part in (("skipped", images), ("page skipped", pages)):
        skipped = part[part["status"] == "skipped"]
        for reason, count in skipped["reason"].map(_reason_kind).value_counts().items():
            rows.append((f"{prefix}: {reason}", int(count)))
    return pd.DataFrame(rows, columns=["outcome", "count"])


# --- Everything at once -----------------------------------------------------------------------


def download_gallery(
    index_url: str,
    image_dir: str | Path,
    min_side: int = 64,
    request_delay_s: float = 1.0,
    max_images: int | None = None,
    progress: bool = True,
    depth: int = 1,
    user_agent: str = USER_AGENT,
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
    retries: int = 3,
    backoff: float = 0.5,
) -> pd.DataFrame:
    """Steps 1-5 of notebook 01 in one call: crawl the gallery at ``index_url`` and download
    its distinct photos into ``image_dir``. Returns ``download_images``' report.

    Raises ``GalleryUnreachableError`` when the index cannot be fetched and
    ``NoImagesFoundError`` when nothing usable is found.
    """
    with make_session(user_agent, timeout, retries, backoff, request_delay_s) as session:
        pages = find_gallery_pages(session, index_url, depth=depth)
        links = collect_image_links(session, pages)
        return download_images(
            session, links, image_dir, min_side=min_side, max_images=max_images, progress=progress
        )
