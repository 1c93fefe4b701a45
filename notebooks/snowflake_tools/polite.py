"""Polite, bounded HTTP for a crawler: one ``PoliteSession`` per crawl (notebook 01, step 2).

Polite: every request says who sends it (User-Agent), obeys the site's robots.txt (including
its ``Crawl-delay``), waits between requests to one site and retries server errors with growing
pauses. Bounded: redirects are followed by hand, a few hops at most, and each hop must pass the
caller's rule (same site, inside the gallery), robots.txt and http(s), or it is never requested;
every body is streamed and stops at a size cap counted on the *decoded* bytes (a small gzip body
cannot inflate into gigabytes); every request has a total deadline besides the per-read timeout
(a server trickling one byte a second cannot hold a download forever).

Whatever makes one URL unusable raises ``Skipped`` with a short ``reason`` for the report;
``Unreachable`` (a ``Skipped``) means the site did not answer at all.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

#: Sent with every request so the site's owners can see who is asking and why.
USER_AGENT = "snowflake-uniqueness-tutorial/1.0 (educational; polite scraper)"

#: (connect, read) timeouts in seconds: how long one connection attempt or one read may wait.
DEFAULT_TIMEOUT = (10.0, 30.0)

#: Seconds one request may take in all, headers and body, however slowly the bytes trickle in.
REQUEST_DEADLINE_S = 120.0

#: Redirect hops followed per request; each one is checked like a link before it is requested.
MAX_REDIRECTS = 5

#: Decoded bytes of a robots.txt that are read and obeyed; reading stops there, the rest is ignored.
#: RFC 9309 asks crawlers to parse at least 500 KiB (rules usually come first), as Google does.
MAX_ROBOTS_BYTES = 512 * 1024

#: A robots.txt asking for a longer ``Crawl-delay`` (seconds) refuses the site: waiting that
#: long between requests would not finish a gallery.
MAX_CRAWL_DELAY_S = 60.0

#: HTTP statuses worth asking again for: the server's trouble, not ours.
RETRY_STATUSES = (500, 502, 503, 504)

#: Statuses whose ``Location`` header is followed (by hand, see ``PoliteSession.fetch``).
REDIRECT_STATUSES = (301, 302, 303, 307, 308)

_CHUNK_BYTES = 64 * 1024


class Skipped(Exception):
    """``url`` cannot be used; ``reason`` says why in the report's words (``"robots.txt"``,
    ``"too large (> 5 MiB)"``, ``"redirect loop (...)"``...)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"Skipped {url}: {reason}")


class Unreachable(Skipped):
    """The site gave no answer: connection refused, unknown host, timed out."""


@dataclass(frozen=True)
class Fetched:
    """The final answer to a ``fetch``: ``url`` after redirects, HTTP ``status``, the media type
    (``"text/html"``, ``""`` when not sent), the declared ``charset`` (or None) and ``body``, the
    decoded bytes, which is None unless the status is 200 and the media type was wanted.
    ``cut`` is True when the body went on past the cap and only its first bytes were kept
    (asked for with ``cut=True``; otherwise a body past the cap is ``Skipped``)."""

    url: str
    status: int
    content_type: str
    charset: str | None
    body: bytes | None
    cut: bool = False


class PoliteSession:
    """HTTP GETs that identify themselves, wait, retry, obey robots.txt and stay in bounds.

    - every request sends ``user_agent``; ``timeout`` (seconds, or (connect, read)) bounds each
      connection attempt and read, ``deadline_s`` the whole request;
    - connection errors and 5xx answers are retried ``retries`` times, waiting
      ``backoff * 2**(n-1)`` seconds before the n-th retry (urllib3 ``Retry``);
    - consecutive requests to one site are at least ``request_delay_s`` seconds apart, or the
      site's robots.txt ``Crawl-delay`` when that is longer; redirect hops wait too;
    - each site's robots.txt is read once, its first ``MAX_ROBOTS_BYTES`` at most (RFC 9309):
      missing or another 4xx: all allowed; 401/403, 5xx after the retries, a body that cannot
      be decoded, or a ``Crawl-delay`` over ``MAX_CRAWL_DELAY_S``: nothing allowed; a longer
      one is read up to the cap, in whole lines, and ``notes`` says so;
    - ``fetch`` follows at most ``max_redirects`` redirects.

    ``notes`` maps a URL to something the crawl report should mention that is not a skip (a
    robots.txt read only in part).
    """

    def __init__(
        self,
        user_agent: str = USER_AGENT,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        retries: int = 3,
        backoff: float = 0.5,
        request_delay_s: float = 1.0,
        deadline_s: float = REQUEST_DEADLINE_S,
        max_redirects: int = MAX_REDIRECTS,
    ) -> None:
        if min(retries, backoff, request_delay_s, max_redirects) < 0 or deadline_s <= 0:
            raise ValueError(
                "retries, backoff, request_delay_s and max_redirects must be zero or more, "
                "and deadline_s more than zero."
            )
        self.user_agent = user_agent
        self.timeout = timeout
        self.request_delay_s = request_delay_s
        self.deadline_s = deadline_s
        self.max_redirects = max_redirects
        self.http = requests.Session()
        # Only encodings urllib3 decodes in bounded steps; the caps count decoded bytes.
        self.http.headers.update({"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate"})
        retry = Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            other=0,
            redirect=0,  # redirects are followed by hand, hop by hop
            backoff_factor=backoff,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET"}),
            raise_on_status=False,  # the last 5xx answer is returned, and reported as such
            raise_on_redirect=False,
            retry_after_max=60,
        )
        adapter = HTTPAdapter(max_retries=retry)
        self.http.mount("http://", adapter)
        self.http.mount("https://", adapter)
        self._robots: dict[str, RobotFileParser | str] = {}  # origin -> rules, or why unreadable
        self.notes: dict[str, str] = {}
        self._last_request: dict[str, float] = {}

    # --- robots.txt -----------------------------------------------------------------------

    def refusal(self, url: str) -> str | None:
        """Why robots.txt keeps this User-Agent from ``url`` (``"robots.txt"``...), or None.

        An unreadable robots.txt, or one asking for more than ``MAX_CRAWL_DELAY_S`` between
        requests, refuses the whole site.
        """
        rules = self._robots_for(url)
        if isinstance(rules, str):
            return f"robots.txt unreadable ({rules})"
        crawl_delay = float(rules.crawl_delay(self.user_agent) or 0)
        if crawl_delay > MAX_CRAWL_DELAY_S:
            return f"robots.txt Crawl-delay ({crawl_delay:g} s, over {MAX_CRAWL_DELAY_S:g} s)"
        return None if rules.can_fetch(self.user_agent, url) else "robots.txt"

    def allowed(self, url: str) -> bool:
        """True when the site's robots.txt lets this User-Agent fetch ``url``."""
        return self.refusal(url) is None

    def delay_s(self, url: str) -> float:
        """Seconds to leave between two requests to ``url``'s site."""
        rules = self._robots.get(_origin(url))
        crawl_delay = (
            rules.crawl_delay(self.user_agent) if isinstance(rules, RobotFileParser) else 0
        )
        return max(self.request_delay_s, float(crawl_delay or 0))

    def _robots_for(self, url: str) -> RobotFileParser | str:
        origin = _origin(url)
        if origin not in self._robots:
            self._robots[origin] = self._read_robots(origin)
        return self._robots[origin]

    def _read_robots(self, origin: str) -> RobotFileParser | str:
        # Fetched through this session so that it is identified, delayed, retried and capped
        # like any other request. Rules as in RFC 9309: a server error means "disallow all"
        # (2.3.1.4); other 4xx answers mean there are no rules (2.3.1.3), but a site that
        # locks its robots.txt away (401, 403) is not crawled.
        robots_url = origin + "/robots.txt"
        parser = RobotFileParser(robots_url)
        try:
            answer = self._fetch(
                robots_url,
                MAX_ROBOTS_BYTES,
                lambda url: _origin(url) == origin,
                robots=False,
                cut=True,
            )
        except Unreachable:
            raise
        except Skipped as error:
            return error.reason
        if answer.status in (401, 403) or answer.status >= 500:
            parser.disallow_all = True
        elif answer.status >= 400:
            parser.allow_all = True
        else:
            body = answer.body or b""
            if answer.cut:
                # Whole lines only: a rule cut short could mean another rule ("Disallow: /").
                body = body[: body.rfind(b"\n") + 1]
                self.notes[robots_url] = (
                    f"larger than {_size(MAX_ROBOTS_BYTES)}: its first "
                    f"{_size(MAX_ROBOTS_BYTES)} obeyed, the rest ignored (RFC 9309)"
                )
            parser.parse(body.decode("utf-8", errors="replace").splitlines())
        return parser

    # --- requests -------------------------------------------------------------------------

    def fetch(
        self,
        url: str,
        max_bytes: int,
        in_scope: Callable[[str], bool] | None = None,
        content_types: tuple[str, ...] = (),
    ) -> Fetched:
        """GET ``url`` politely and within bounds; return the final answer.

        Redirects are followed by hand, at most ``max_redirects`` hops. Before each hop is
        requested its URL must be http(s), pass ``in_scope`` (the caller's rule, e.g. "same site
        and inside the gallery") and robots.txt; it waits the site's delay. The body is read
        only for a 200 answer whose media type starts with one of ``content_types`` (any type
        when empty or not sent), streamed and stopped at ``max_bytes`` decoded bytes or at the
        deadline.

        Raises ``Skipped`` (reason for the report) when a rule or a bound stops the request,
        ``Unreachable`` when the site does not answer.
        """
        return self._fetch(url, max_bytes, in_scope, content_types=content_types)

    def _fetch(self, url, max_bytes, in_scope, content_types=(), robots=True, cut=False) -> Fetched:
        visited = [url]
        for hop in range(self.max_redirects + 1):
            self._check(visited[-1], in_scope, robots, redirected=hop > 0)
            current = visited[-1]
            with self._get(current) as response:
                location = response.headers.get("Location")
                if response.status_code in REDIRECT_STATUSES and location:
                    visited.append(_redirect_target(current, location))
                    if visited[-1] in visited[:-1]:
                        raise Skipped(url, f"redirect loop ({visited[-1]})")
                    continue
                media_type, _, parameters = response.headers.get("Content-Type", "").partition(";")
                media_type = media_type.strip().lower()
                charset = _charset(parameters)
                wanted = not media_type or not content_types or media_type.startswith(content_types)
                body, was_cut = None, False
                if response.status_code == 200 and wanted:
                    body, was_cut = self._read_body(response, max_bytes, url, cut)
                return Fetched(current, response.status_code, media_type, charset, body, was_cut)
        raise Skipped(url, f"too many redirects (> {self.max_redirects})")

    def _check(self, url: str, in_scope, robots: bool, redirected: bool) -> None:
        """Raise ``Skipped`` unless ``url`` may be requested."""
        redirect = "redirect " if redirected else ""
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            raise Skipped(url, f"{redirect}not http(s) ({url})")
        if in_scope is not None and not in_scope(url):
            raise Skipped(url, f"{redirect}outside the gallery ({url})")
        refusal = self._refusal_or_unreachable(url) if robots else None
        if refusal and redirected:
            raise Skipped(url, f"redirect disallowed by robots.txt ({url})")
        if refusal:
            raise Skipped(url, refusal)

    def _refusal_or_unreachable(self, url: str) -> str | None:
        try:
            return self.refusal(url)
        except requests.RequestException as error:
            raise Unreachable(url, f"connection failed ({type(error).__name__})") from error

    def _get(self, url: str) -> requests.Response:
        """One GET of ``url`` (no redirects, body not read yet) after the site's delay."""
        site = _origin(url)
        pause = self._last_request.get(site, -float("inf")) + self.delay_s(url) - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        connect, read = self.timeout if isinstance(self.timeout, tuple) else (self.timeout,) * 2
        timeout = (connect, min(read, self.deadline_s))
        try:
            return self.http.get(url, timeout=timeout, stream=True, allow_redirects=False)
        except (requests.ConnectionError, requests.Timeout) as error:
            raise Unreachable(url, f"connection failed ({type(error).__name__})") from error
        except requests.RequestException as error:
            raise Skipped(url, f"request failed ({type(error).__name__})") from error
        except ValueError as error:  # requests parses a redirect's Location even when not asked
            raise Skipped(url, f"bad redirect ({error})") from error
        finally:
            self._last_request[site] = time.monotonic()

    def _read_body(
        self, response: requests.Response, max_bytes: int, url: str, cut: bool = False
    ) -> tuple[bytes, bool]:
        """The decoded body, read a chunk at a time within the deadline, and whether it was cut.

        A body longer than ``max_bytes`` is ``Skipped``, or with ``cut`` its first ``max_bytes``
        are returned and the rest is never read.
        """
        deadline = time.monotonic() - response.elapsed.total_seconds() + self.deadline_s
        chunks, size = [], 0
        try:
            # read1 returns what has arrived (decoded, at most one chunk), so the deadline is
            # checked however slowly the server sends.
            while chunk := response.raw.read1(_CHUNK_BYTES, decode_content=True):
                size += len(chunk)
                if size > max_bytes and cut:
                    return b"".join([*chunks, chunk])[:max_bytes], True
                if size > max_bytes:
                    raise Skipped(url, f"too large (> {_size(max_bytes)})")
                if time.monotonic() > deadline:
                    raise Skipped(url, f"too slow (over {self.deadline_s:g} s)")
                chunks.append(chunk)
        except urllib3.exceptions.DecodeError as error:
            encoding = response.headers.get("Content-Encoding", "")
            raise Skipped(url, f"undecodable body (Content-Encoding {encoding})") from error
        except urllib3.exceptions.ReadTimeoutError as error:
            raise Skipped(url, "too slow (read timed out)") from error
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as error:
            raise Skipped(url, "truncated (connection closed early)") from error
        return b"".join(chunks), False

    def close(self) -> None:
        """Close the underlying connections."""
        self.http.close()

    def __enter__(self) -> PoliteSession:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def _redirect_target(url: str, location: str) -> str:
    """The absolute URL a ``Location`` header points to; ``Skipped`` when it cannot be parsed."""
    try:
        target = urljoin(url, location.strip())
        parts = urlsplit(target)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as error:
        raise Skipped(url, f"bad redirect ({error})") from error
    return parts._replace(fragment="").geturl()


def _charset(parameters: str) -> str | None:
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip("\"'")
    return None


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:g} MiB" if n_bytes >= 2**20 else f"{n_bytes / 2**10:g} KiB"
