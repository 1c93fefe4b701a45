"""Crawling a snow-crystal photo gallery and keeping its photos (notebook 01, steps 2-6).

Notebook 01 runs the steps one cell at a time:

1. ``polite.PoliteSession``  -- one HTTP session: User-Agent, robots.txt, delays, caps, deadlines
2. ``find_gallery_pages``    -- the index plus the pages it links to in the same folder tree
3. ``collect_image_links``   -- every image URL on those pages, full-size rather than thumbnail
4. ``download_images``       -- keep only real, large-enough, new images; returns a report
5. ``summarise_report``      -- found / saved / skipped by reason, as a small table

A crawl survives any single bad page, link or image: it is skipped, and the report lists it with
its reason. What lands on disk: one file per distinct image (by SHA-256 of its bytes, saved as
downloaded), ``manifest.csv`` (see ``files.MANIFEST_COLUMNS``, rewritten as each file arrives)
and ``.seen_urls.csv``, a note of URLs whose image is known to be a duplicate or too small, so
that a re-run does not fetch them again.
"""

from __future__ import annotations

import contextlib
import io
import posixpath
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, unquote_to_bytes, urljoin, urlsplit, urlunsplit

import pandas as pd
import requests
from bs4 import BeautifulSoup, UnicodeDammit
from PIL import Image, ImageFile, UnidentifiedImageError
from tqdm.auto import tqdm

from snowflake_tools import files, polite

#: Pages larger than this (decoded bytes) are skipped: a gallery page is a few hundred KiB.
MAX_PAGE_BYTES = 5 * 2**20

#: Bodies larger than this (decoded bytes) are not photos of a snow crystal; they are skipped.
MAX_IMAGE_BYTES = 50 * 2**20

#: Pillow formats that are kept, with the file ending added when the URL has none.
IMAGE_FORMATS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif"}

#: Path endings of links that are followed as gallery pages (besides folders and bare names).
PAGE_SUFFIXES = (".html", ".htm", ".shtml", ".xhtml", ".php", ".asp", ".aspx", ".cfm", ".jsp")

#: Media types accepted as a page.
PAGE_TYPES = ("text/html", "application/xhtml+xml")

#: Columns of the report that ``download_images`` returns: one row per image URL, skipped
#: page (``kind == "page"``) or malformed link (``kind == "link"``), and one per note of the
#: session (``kind == "robots.txt"``, ``status == "note"``: read only in part).
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


class GalleryRefusedError(PermissionError):
    """The site's robots.txt does not let this scraper fetch the gallery's index."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        detail = "" if reason == "robots.txt" else f" ({reason})"
        super().__init__(
            f"robots.txt disallows {url} for {polite.USER_AGENT!r}{detail}: the site's "
            f"owners ask crawlers to stay away, so nothing was downloaded. Point BASE_URL at "
            f"a gallery that allows it, or {_DEMO_HINT}."
        )


class NoImagesFoundError(RuntimeError):
    """The gallery was reached but yielded no usable image. ``report`` holds what was tried."""

    def __init__(self, message: str, report: pd.DataFrame | None = None) -> None:
        self.report = report
        super().__init__(message)


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


@dataclass
class GalleryPages:
    """What ``find_gallery_pages`` found: ``html`` maps each page's final URL to its HTML, in
    crawl order (the index first); ``skipped`` holds report rows for the pages and links that
    could not be used, each with its reason."""

    html: dict[str, str] = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        """The pages' URLs, in crawl order."""
        return list(self.html)


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
    try:
        absolute = urljoin(base_url, reference.strip())
        if urlsplit(absolute).scheme.lower() not in ("http", "https"):
            return None  # mailto:, javascript:, data: ...
        return canonical_url(absolute, keep_query=keep_query)
    except ValueError:
        return None  # malformed: find_malformed_links reports it


def _base_url(page_url: str, soup: BeautifulSoup) -> str:
    base = soup.find("base", href=True)
    if base is None:
        return page_url
    try:
        return urljoin(page_url, base["href"])
    except ValueError:
        return page_url


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


#: Tags and the attribute holding their link, as read by ``find_page_links``/``find_image_links``.
_LINK_ATTRIBUTES = {"a": "href", "area": "href", "frame": "src", "iframe": "src", "img": "src"}


def find_malformed_links(page_url: str, html: str) -> list[tuple[str, str]]:
    """Links on the page that cannot be parsed as URLs, as (link, reason), each once.

    ``http://[oops/p.html`` (a broken IPv6 host) or ``http://host:99999/`` (a port out of range)
    are dropped by ``find_page_links`` and ``find_image_links``; this lists them for the report.
    """
    soup = BeautifulSoup(html, "html.parser")
    base = _base_url(page_url, soup)
    malformed: dict[str, str] = {}
    for tag in soup.find_all(list(_LINK_ATTRIBUTES)):
        reference = (tag.get(_LINK_ATTRIBUTES[tag.name]) or "").strip()
        try:
            canonical_url(urljoin(base, reference))
        except ValueError as error:
            malformed.setdefault(reference, f"malformed URL ({error})")
    return list(malformed.items())


# --- Pages ------------------------------------------------------------------------------------


def site_is_reachable(url: str, timeout: float = 5.0, user_agent: str = polite.USER_AGENT) -> bool:
    """True when one GET of ``url`` answers below 400 within ``timeout`` seconds (no retries).

    Cheap enough for notebook 01's ``SOURCE = "auto"``: the body is not read and redirects are
    not followed (the crawl checks them).
    """
    try:
        with requests.get(
            url,
            timeout=timeout,
            stream=True,
            allow_redirects=False,
            headers={"User-Agent": user_agent},
        ) as response:
            return response.ok
    except (requests.RequestException, ValueError):
        return False


def fetch_page(
    session: polite.PoliteSession, url: str, in_scope: Callable[[str], bool] | None = None
) -> tuple[str, str]:
    """(final URL, HTML text) of the page at ``url``, read within ``MAX_PAGE_BYTES``.

    ``in_scope(url)`` is the rule every redirect hop must pass (see ``PoliteSession.fetch``).
    Raises ``polite.Skipped`` with the report's reason (``robots.txt``, ``HTTP 404``, ``not HTML
    (image/png)``, ``too large (> 5 MiB)``...) and ``polite.Unreachable`` when the site does not
    answer.
    """
    answer = session.fetch(url, MAX_PAGE_BYTES, in_scope, content_types=PAGE_TYPES)
    if answer.status != 200:
        raise polite.Skipped(url, f"HTTP {answer.status}")
    if answer.body is None:
        raise polite.Skipped(url, f"not HTML ({answer.content_type})")
    return canonical_url(answer.url, keep_query=True), _decode_html(answer)


def _decode_html(answer: polite.Fetched) -> str:
    if answer.charset:
        with contextlib.suppress(LookupError):
            return answer.body.decode(answer.charset, errors="replace")
    # Without a (known) declared charset, the page's <meta> knows best.
    return UnicodeDammit(answer.body, is_html=True).unicode_markup or ""


def find_gallery_pages(
    session: polite.PoliteSession, index_url: str, depth: int = 1
) -> GalleryPages:
    """The index and the gallery pages reachable from it within ``depth`` links, with their HTML.

    Breadth-first from the index. A link is followed when it is an HTML page on the same site
    and under the index's folder (``is_in_gallery``), each page once, so links back to the index
    or between pages do not loop; every redirect hop must stay there too. ``depth=0`` is the
    index alone; 1 (the default) adds the pages it links to, which is how the gallery is built.
    Pages that cannot be used (robots.txt, ``HTTP 404``, too large, a redirect loop...) and
    malformed links are left out and listed in ``.skipped`` with their reason.

    Raises ``GalleryUnreachableError`` when the index cannot be fetched and
    ``GalleryRefusedError`` when robots.txt disallows it.
    """
    if depth < 0:
        raise ValueError(f"depth must be 0 or more, got {depth}.")
    try:
        index = canonical_url(index_url, keep_query=True)
    except ValueError as error:
        raise ValueError(f"The index URL {index_url!r} is malformed ({error}).") from error
    try:
        root, html = fetch_page(session, index, lambda url: same_site(url, index))
    except polite.Unreachable as error:
        raise GalleryUnreachableError(index, error.reason) from error
    except polite.Skipped as error:
        if error.reason.startswith("robots.txt"):
            raise GalleryRefusedError(index, error.reason) from error
        raise GalleryUnreachableError(index, f"the index page: {error.reason}") from error
    found = GalleryPages(html={root: html})
    seen, frontier = {index, root}, [root]
    for level in range(depth + 1):
        next_frontier = []
        for page in frontier:
            for link, reason in find_malformed_links(page, found.html[page]):
                found.skipped.append(_skip_row("link", link, page, reason))
            if level == depth:
                continue
            for link in find_page_links(page, found.html[page]):
                if link in seen or not is_in_gallery(link, root):
                    continue
                seen.add(link)
                try:
                    final, link_html = fetch_page(session, link, lambda u: is_in_gallery(u, root))
                except polite.Skipped as error:
                    found.skipped.append(_skip_row("page", link, page, error.reason))
                    continue
                if final in found.html:
                    continue  # a redirect to a page already listed
                seen.add(final)
                found.html[final] = link_html
                next_frontier.append(final)
        frontier = next_frontier
    return found


def _skip_row(kind: str, url: str, linked_from: str, reason: str) -> dict:
    return {"kind": kind, "url": url, "page": linked_from, "status": "skipped", "reason": reason}


def collect_image_links(pages: GalleryPages) -> list[ImageLink]:
    """Every distinct image on ``pages``, in crawl order: page by page, top to bottom.

    Runs ``find_image_links`` on each page. One link per canonical URL; the first page that
    shows it wins, so the order (and which of two URLs of one photo names the file) is the same
    on every run. An image that some page uses only as the thumbnail of a larger one is
    dropped. Raises ``NoImagesFoundError`` when there is none.
    """
    links: dict[str, ImageLink] = {}
    for page, html in pages.html.items():
        for link in find_image_links(page, html):
            links.setdefault(link.url, link)
    thumbnails = {link.thumbnail_url for link in links.values()}
    found = [link for url, link in links.items() if url not in thumbnails]
    if not found:
        searched = ", ".join(pages.html)
        raise NoImagesFoundError(
            f"Found no image links on the {len(pages.html)} page(s) searched: {searched}. "
            "Check that the index URL is the gallery's index page, that its pages show <img> "
            f"tags or link to .jpg/.jpeg/.png/.gif files, and that depth reaches them; or "
            f"{_DEMO_HINT}."
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
        raise ImageRejectedError(f"corrupt ({type(error).__name__}: {error}"[:90] + ")") from error
    if image_format not in IMAGE_FORMATS:
        raise ImageRejectedError(f"unsupported format ({image_format})")
    return image_format, width, height


@contextlib.contextmanager
def _truncated_images_refused() -> Iterator[None]:
    """Within the block Pillow refuses truncated files, whatever another module set globally."""
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def _file_name_for(url: str, image_format: str) -> str:
    name = files.safe_file_name(unquote(urlsplit(url).path.rsplit("/", 1)[-1]))
    if not files.is_image_name(name):
        name += IMAGE_FORMATS[image_format]
    return name


class _ImageFolder:
    """What is already in ``image_dir``: verified manifest rows, names taken, URLs judged."""

    def __init__(self, image_dir: Path) -> None:
        self.image_dir = image_dir
        files.remove_partial_files(image_dir)  # left by an interrupted write
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
        files.write_manifest(self.image_dir, self.rows.values())  # an interrupted run keeps it
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
    session: polite.PoliteSession, link: ImageLink, folder: _ImageFolder, min_side: int
) -> dict:
    """Fetch, check and save one image; the report row says what happened."""
    try:
        answer = session.fetch(
            link.url,
            MAX_IMAGE_BYTES,
            lambda url: same_site(url, link.page),
            content_types=("image/", "application/octet-stream"),
        )
        if answer.status != 200:
            return _skip(link, f"HTTP {answer.status}")
        if answer.body is None:
            return _skip(link, f"not an image ({answer.content_type})")
        data = answer.body
        image_format, width, height = check_image(data)
    except (ImageRejectedError, polite.Skipped) as error:
        return _skip(link, error.reason)
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
    session: polite.PoliteSession,
    links: Iterable[ImageLink],
    image_dir: str | Path,
    min_side: int = 64,
    max_images: int | None = None,
    progress: bool = True,
    skipped: Iterable[dict] = (),
) -> pd.DataFrame:
    """Download ``links`` into ``image_dir``; return the report, one row per URL.

    Each link ends as ``saved``, ``already on disk`` (in the manifest with intact content: not
    requested again), ``duplicate`` (same bytes as a file already kept; ``file`` names it) or
    ``skipped`` with a ``reason``: ``other site``, ``robots.txt``, ``HTTP 404``, ``not an image
    (text/html)``, ``truncated``, ``too large (> 50 MiB)``, ``too slow (...)``, ``redirect
    outside the gallery (...)``, ``too small (16x16)`` (shorter side below ``min_side``
    pixels), ``over max_images (N)``. ``max_images`` caps the images kept (saved plus already
    on disk); None keeps all. Files are the original bytes, written atomically; ``manifest.csv``
    is merged with the one already there and rewritten as each file arrives, so an interrupted
    run keeps it. The session's notes (a robots.txt read only in part, status ``note``), then
    the ``skipped`` rows (``GalleryPages.skipped``: pages and malformed links) head the report.

    Raises ``NoImagesFoundError`` (with ``.report``) when no link gave a usable image.
    """
    if min_side < 1:
        raise ValueError(f"min_side must be at least 1 pixel, got {min_side}.")
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be None (all) or at least 1, got {max_images}.")
    image_dir = Path(image_dir)
    image_dir.mkdir(parents=True, exist_ok=True)
    folder = _ImageFolder(image_dir)
    rows = list(skipped)
    links = list(links)
    kept = 0
    try:
        for link in tqdm(links, desc="Downloading", unit="image", disable=not progress):
            row = _judge_link(session, link, folder, min_side, max_images, kept)
            kept += row["status"] in ("saved", "already on disk")
            rows.append(row)
    finally:
        folder.write()
    notes = [
        {"kind": "robots.txt", "url": url, "page": "", "status": "note", "reason": note}
        for url, note in session.notes.items()
    ]
    report = pd.DataFrame(notes + rows, columns=REPORT_COLUMNS).fillna({"reason": "", "file": ""})
    if not report["status"].isin(["saved", "already on disk", "duplicate"]).any():
        raise NoImagesFoundError(
            f"None of the {len(links)} image link(s) gave a usable image; by reason: "
            f"{_reason_counts(report)}. Check min_side ({min_side} px) and the report "
            f"(this error's .report), or {_DEMO_HINT}.",
            report,
        )
    return report


def _judge_link(
    session: polite.PoliteSession,
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
    return _download_one(session, link, folder, min_side)


def _reason_kind(reason: str) -> str:
    """``"too small (16x16)"`` -> ``"too small"``: reasons grouped for the summary."""
    return re.sub(r"\s*\(.*\)$", "", str(reason)) or "unknown"


def _reason_counts(report: pd.DataFrame) -> str:
    skipped = report[report["status"] == "skipped"]
    counts = skipped["reason"].map(_reason_kind).value_counts()
    return ", ".join(f"{reason}: {count}" for reason, count in counts.items()) or "none"


def summarise_report(report: pd.DataFrame) -> pd.DataFrame:
    """A small table for the notebook: images found, saved, already on disk, duplicates, skips
    by reason (skipped pages and malformed links listed separately) and each note in full
    (``note: robots.txt larger than ...``). Columns ``outcome`` and ``count``."""
    images = report[report["kind"] == "image"]
    rows = [("image links found", len(images))]
    for status in ("saved", "already on disk", "duplicate"):
        rows.append((status, int((images["status"] == status).sum())))
    for kind, prefix in (("image", "skipped"), ("page", "page skipped"), ("link", "link skipped")):
        part = report[report["kind"] == kind]
        skipped = part[part["status"] == "skipped"]
        for reason, count in skipped["reason"].map(_reason_kind).value_counts().items():
            rows.append((f"{prefix}: {reason}", int(count)))
    for note in report[report["status"] == "note"].itertuples():
        rows.append((f"note: {note.kind} {note.reason}", 1))
    return pd.DataFrame(rows, columns=["outcome", "count"])
