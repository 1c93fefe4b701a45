"""Tests of the gallery scraper: parsing without network, saving, and whole runs against the
loopback gallery of conftest.py (never the real network)."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import tracemalloc
from pathlib import Path

import pandas as pd
import pytest
from helpers import BOMB_BYTES, gzip_bomb
from PIL import Image, ImageFile

from snowflake_tools import files, polite, scrape

FAST = {"request_delay_s": 0.0, "backoff": 0.0, "progress": False}


def scrape_gallery(
    index_url, image_dir, depth=1, min_side=64, max_images=None, progress=False, **session_options
) -> pd.DataFrame:
    """Notebook 01's steps 2-5 in one call, as the notebook runs them."""
    with polite.PoliteSession(**{**FAST_SESSION, **session_options}) as session:
        pages = scrape.find_gallery_pages(session, index_url, depth=depth)
        links = scrape.collect_image_links(pages)
        return scrape.download_images(
            session, links, image_dir, min_side, max_images, progress, skipped=pages.skipped
        )


FAST_SESSION = {"request_delay_s": 0.0, "backoff": 0.0}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def saved_images(image_dir) -> dict[str, str]:
    """File name -> sha256 of every image file in ``image_dir``."""
    return {
        path.name: files.sha256_file(path)
        for path in sorted(image_dir.iterdir())
        if files.is_image_name(path.name)
    }


def leftovers(root) -> list[str]:
    return [path.name for path in root.rglob("*") if path.name.endswith(".part")]


def rows_by_url(report: pd.DataFrame) -> dict[str, dict]:
    return {row["url"]: row for row in report.to_dict("records")}


# --- canonical_url ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("http://h/snow/flake%201.jpg", "http://h/snow/flake 1.jpg"),
        ("http://h/snow/a.jpg?v=2", "http://h/snow/a.jpg"),
        ("http://h/snow/a.jpg#x", "http://h/snow/a.jpg"),
        ("HTTP://Host.EDU:80/snow/a.jpg", "http://host.edu/snow/a.jpg"),
        ("https://host:443/a.jpg", "https://host/a.jpg"),
        ("http://h/snow/./x/../a.jpg", "http://h/snow/a.jpg"),
        ("http://h/%7Ecx/a.jpg", "http://h/~cx/a.jpg"),
        ("http://h/a%2fb.jpg", "http://h/a%2Fb.jpg"),
        ("http://h/flak\u00e9.jpg", "http://h/flak%C3%A9.jpg"),
    ],
)
def test_canonical_url_gives_one_spelling_per_file(first, second):
    assert scrape.canonical_url(first) == scrape.canonical_url(second)


def test_canonical_url_keeps_what_tells_files_apart():
    assert scrape.canonical_url("http://h/a.jpg") != scrape.canonical_url("http://h/A.jpg")
    assert scrape.canonical_url("http://h:8080/a.jpg") == "http://h:8080/a.jpg"
    assert scrape.canonical_url("http://h/a%2Fb.jpg") != scrape.canonical_url("http://h/a/b.jpg")
    assert scrape.canonical_url("http://h/p.php?id=2#top", keep_query=True) == "http://h/p.php?id=2"
    assert scrape.canonical_url("http://h") == "http://h/"


# --- find_image_links -------------------------------------------------------------------------

PAGE = "http://site.edu/~cx/met/snow/plates.html"
PHOTOS = "http://site.edu/~cx/met/snow/photos/"


def test_find_image_links_takes_full_size_photo_not_its_thumbnail():
    html = """
    <a href="photos/big.jpg"><img src="thumbs/small.jpg"></a>
    <a href="photos/flake%201.jpg?v=2"><img src="photos/flake 1.jpg"></a>
    <a href="column.html"><img src="photos/column.png"></a>
    <img src="/images/logo.gif">
    """
    links = scrape.find_image_links(PAGE, html)
    assert links == [
        scrape.ImageLink(PHOTOS + "big.jpg", PAGE, "http://site.edu/~cx/met/snow/thumbs/small.jpg"),
        scrape.ImageLink(PHOTOS + "flake%201.jpg", PAGE, None),  # the link and img are one file
        scrape.ImageLink(PHOTOS + "column.png", PAGE, None),  # an <img> linking to a page
        scrape.ImageLink("http://site.edu/images/logo.gif", PAGE, None),
    ]


def test_find_image_links_resolves_every_kind_of_url_and_ignores_non_http():
    html = """
    <img src="photos/a.jpg"><img src="./photos/a.jpg?size=2"><img src="photos/a.jpg#top">
    <img src="/~cx/met/snow/photos/b.JPG"> <img src="http://SITE.edu:80/~cx/met/snow/photos/c.gif">
    <img src="../snow/photos/d.jpeg"> <a href="photos/e.PNG">e</a> <a href="notes.pdf">notes</a>
    <a href="mailto:a@b.c">mail</a> <img src="data:image/png;base64,AAAA"> <img>
    <a href="javascript:void(0)"><img src="photos/f.jpg"></a>
    <img src="http://elsewhere.org/g.jpg">
    """
    urls = [link.url for link in scrape.find_image_links(PAGE, html)]
    assert urls == [
        PHOTOS + "a.jpg",
        PHOTOS + "b.JPG",
        PHOTOS + "c.gif",
        PHOTOS + "d.jpeg",
        PHOTOS + "e.PNG",
        PHOTOS + "f.jpg",
        "http://elsewhere.org/g.jpg",
    ]


def test_find_image_links_honours_base_href():
    html = '<head><base href="http://site.edu/gallery/"></head><img src="x.jpg">'
    assert [link.url for link in scrape.find_image_links(PAGE, html)] == [
        "http://site.edu/gallery/x.jpg"
    ]


# --- page discovery rules ---------------------------------------------------------------------


def test_find_page_links_keeps_pages_not_images_nor_other_schemes():
    html = """
    <a href="columns.html#top">c</a> <a href="columns.html">again</a> <a href="sub/">folder</a>
    <a href="list.php?page=2">php</a> <a href="photos/a.jpg">image</a> <a href="doc.pdf">pdf</a>
    <a href="mailto:x@y.z">mail</a> <a href="#top">top</a> <a href="/~cx/other.htm">other</a>
    <frame src="frame.html">
    """
    assert scrape.find_page_links(PAGE, html) == [
        "http://site.edu/~cx/met/snow/columns.html",
        "http://site.edu/~cx/met/snow/sub/",
        "http://site.edu/~cx/met/snow/list.php?page=2",
        PAGE,  # "#top" is the page itself: find_gallery_pages has it already
        "http://site.edu/~cx/other.htm",
        "http://site.edu/~cx/met/snow/frame.html",
    ]


INDEX = "https://www.site.edu/~cx/met/snow/images.html"


@pytest.mark.parametrize(
    ("url", "inside"),
    [
        ("https://www.site.edu/~cx/met/snow/plates.html", True),
        ("https://www.site.edu/~cx/met/snow/sub/deep.html", True),
        ("https://WWW.site.edu:443/~cx/met/snow/x/../plates.html", True),
        ("https://www.site.edu/~cx/met/other.html", False),
        ("https://www.site.edu/~cx/met/snowy.html", False),
        ("http://www.site.edu/~cx/met/snow/plates.html", False),
        ("https://mirror.site.edu/~cx/met/snow/plates.html", False),
        ("https://www.site.edu:8443/~cx/met/snow/plates.html", False),
    ],
)
def test_is_in_gallery_means_same_site_and_folder_tree(url, inside):
    assert scrape.is_in_gallery(url, INDEX) is inside


def test_find_gallery_pages_follows_each_gallery_page_once(snow_gallery):
    server, folder = snow_gallery.server, snow_gallery.server.url("/~flakes/met/snow/")
    with polite.PoliteSession(request_delay_s=0, backoff=0) as session:
        pages = scrape.find_gallery_pages(session, snow_gallery.index_url)
    assert pages.urls == [
        folder + "images.html",
        folder + "plates.html",
        folder + "columns.html",
        folder + "sub/needles.html",
    ]
    for page in ["images.html", "plates.html", "columns.html", "sub/needles.html", "gone.html"]:
        assert server.count("/~flakes/met/snow/" + page) == 1, page
    assert not set(server.paths()) & snow_gallery.never_requested
    assert all(entry.host.startswith("127.0.0.1") for entry in server.log)
    assert not any(files.is_image_name(path) for path in server.paths())  # image links
    skipped = {row["url"]: row["reason"] for row in pages.skipped}
    assert skipped == snow_gallery.skipped_pages


def test_find_gallery_pages_depth_is_a_parameter(snow_gallery):
    folder = snow_gallery.server.url("/~flakes/met/snow/")
    with polite.PoliteSession(request_delay_s=0, backoff=0) as session:
        assert scrape.find_gallery_pages(session, snow_gallery.index_url, depth=0).urls == [
            folder + "images.html"
        ]
    with polite.PoliteSession(request_delay_s=0, backoff=0) as session:
        pages = scrape.find_gallery_pages(session, snow_gallery.index_url, depth=2)
        links = scrape.collect_image_links(pages)
    assert folder + "deeper.html" in pages.urls
    assert folder + "photos/deep.jpg" in {link.url for link in links}


def test_collect_image_links_dedups_first_page_wins_and_drops_thumbnails(snow_gallery):
    folder = snow_gallery.server.url("/~flakes/met/snow/")
    with polite.PoliteSession(request_delay_s=0, backoff=0) as session:
        pages = scrape.find_gallery_pages(session, snow_gallery.index_url)
        links = scrape.collect_image_links(pages)
    urls = [link.url for link in links]
    assert len(urls) == len(set(urls))
    by_url = {link.url: link for link in links}
    assert by_url[folder + "photos/plate-a.jpg"].page == folder + "plates.html"  # not columns
    assert by_url[folder + "photos/plate-a.jpg"].thumbnail_url == folder + "thumbs/plate-a.jpg"
    assert not [url for url in urls if "/thumbs/" in url or "thumb." in url]
    assert set(urls) == snow_gallery.expected_urls | set(snow_gallery.expected_skips) | {
        folder + "photos/copy-of-plate-a.jpg"
    }
    with polite.PoliteSession(request_delay_s=0, backoff=0) as session:  # same order every time
        again = scrape.collect_image_links(scrape.find_gallery_pages(session, pages.urls[0]))
    assert again == links


# --- check_image ------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "expected"), [("JPEG", "JPEG"), ("PNG", "PNG"), ("GIF", "GIF")])
def test_check_image_accepts_real_images(make_image, fmt, expected):
    assert scrape.check_image(make_image(1, (70, 50), fmt)) == (expected, 70, 50)


def test_check_image_rejects_what_is_not_a_whole_image(make_image, monkeypatch):
    jpeg = make_image(1)
    cases = {
        jpeg[: len(jpeg) // 2]: "truncated",
        b"<!DOCTYPE html><html><body>404</body></html>": "not an image (HTML)",
        b"\x00\x01 random bytes": "not an image (unrecognised data)",
    }
    bmp = io.BytesIO()
    Image.new("RGB", (80, 80)).save(bmp, format="BMP")
    cases[bmp.getvalue()] = "unsupported format (BMP)"
    # Another module switching Pillow to tolerate truncation must not let broken files through.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    for data, reason in cases.items():
        with pytest.raises(scrape.ImageRejectedError) as caught:
            scrape.check_image(data)
        assert caught.value.reason == reason
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


# --- whole runs against the fixture gallery ---------------------------------------------------


def test_download_gallery_saves_exactly_the_distinct_full_size_photos(
    snow_gallery, gallery_expected_sha256, tmp_path
):
    image_dir = tmp_path / "flakes"
    report = scrape_gallery(snow_gallery.index_url, image_dir, **FAST)

    saved = saved_images(image_dir)
    assert set(saved.values()) == gallery_expected_sha256
    assert len(saved) == len(gallery_expected_sha256)
    assert {"COLUMN.JPG", "overview.gif", "star.png", "stellar.jpeg", "flake_1.jpg"} <= set(saved)
    originals = {sha256(data): data for data in snow_gallery.photos.values()}
    for name, digest in saved.items():  # original bytes, not re-encoded
        assert (image_dir / name).read_bytes() == originals[digest]
    assert leftovers(tmp_path) == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ["flakes", "site"]

    manifest = files.read_manifest(image_dir)
    assert list(manifest.columns) == files.MANIFEST_COLUMNS
    assert sorted(manifest["file"]) == sorted(saved)
    assert set(manifest["url"]) == snow_gallery.expected_urls
    for row in manifest.to_dict("records"):
        assert row["sha256"] == saved[row["file"]]
        with Image.open(image_dir / row["file"]) as image:
            assert (row["width"], row["height"]) == image.size
    plate = manifest.set_index("file").loc["plate-a.jpg"]
    assert plate["page"] == snow_gallery.server.url("/~flakes/met/snow/plates.html")

    images = report[report["kind"] == "image"]
    assert set(images.loc[images["status"] == "saved", "url"]) == snow_gallery.expected_urls
    by_url = rows_by_url(images)
    for url, reason in snow_gallery.expected_skips.items():
        assert by_url[url]["status"] == "skipped", url
        assert by_url[url]["reason"].startswith(reason), (url, by_url[url]["reason"])
    copy = by_url[snow_gallery.server.url("/~flakes/met/snow/photos/copy-of-plate-a.jpg")]
    assert (copy["status"], copy["reason"], copy["file"]) == (
        "duplicate",
        "same content as plate-a.jpg",
        "plate-a.jpg",
    )
    pages = report[report["kind"] == "page"]
    assert dict(zip(pages["url"], pages["reason"], strict=True)) == snow_gallery.skipped_pages
    assert set(report["status"]) <= {"saved", "already on disk", "duplicate", "skipped"}


def test_download_gallery_is_polite(snow_gallery, tmp_path):
    server = snow_gallery.server
    scrape_gallery(snow_gallery.index_url, tmp_path / "flakes", **FAST)
    assert server.paths()[0] == "/robots.txt"
    assert server.count("/robots.txt") == 1
    assert {entry.user_agent for entry in server.log} == {polite.USER_AGENT}
    assert not set(server.paths()) & snow_gallery.never_requested
    assert all(entry.host.startswith("127.0.0.1") for entry in server.log)  # no other site
    assert server.count("/~flakes/met/snow/photos/retry.jpg") == 3  # two 500s, then the photo
    for path in snow_gallery.image_paths - {"/~flakes/met/snow/photos/retry.jpg"}:
        assert server.count(path) == 1, path


def test_second_run_requests_no_image_it_already_has(snow_gallery, tmp_path):
    server, image_dir = snow_gallery.server, tmp_path / "flakes"
    scrape_gallery(snow_gallery.index_url, image_dir, **FAST)
    first_files, first_manifest = saved_images(image_dir), files.read_manifest(image_dir)
    server.clear_log()

    report = scrape_gallery(snow_gallery.index_url, image_dir, **FAST)

    requested = set(server.paths())
    assert not requested & snow_gallery.image_paths  # zero GETs of valid images
    broken = {"missing.jpg", "fake.jpg", "soft.jpg", "broken.jpg", "cut.jpg"}
    for name in broken:  # failures are worth another try
        assert server.count("/~flakes/met/snow/photos/" + name) == 1
    assert saved_images(image_dir) == first_files
    pd.testing.assert_frame_equal(files.read_manifest(image_dir), first_manifest)
    images = report[report["kind"] == "image"]
    on_disk = set(images.loc[images["status"] == "already on disk", "url"])
    assert on_disk == snow_gallery.expected_urls
    assert (images["status"] == "saved").sum() == 0
    by_url = rows_by_url(images)
    for url, reason in snow_gallery.expected_skips.items():
        assert by_url[url]["reason"].startswith(reason), url
    copy = by_url[snow_gallery.server.url("/~flakes/met/snow/photos/copy-of-plate-a.jpg")]
    assert copy["status"] == "duplicate"
    assert leftovers(tmp_path) == []


def test_changed_or_deleted_file_is_downloaded_again(snow_gallery, tmp_path):
    server, image_dir = snow_gallery.server, tmp_path / "flakes"
    scrape_gallery(snow_gallery.index_url, image_dir, **FAST)
    first = saved_images(image_dir)
    (image_dir / "star.png").unlink()
    server.clear_log()
    report = scrape_gallery(snow_gallery.index_url, image_dir, **FAST)
    assert server.count("/~flakes/met/snow/photos/star.png") == 1
    assert saved_images(image_dir) == first
    assert report.loc[report["file"] == "star.png", "status"].tolist() == ["saved"]


def test_summarise_report_counts_found_saved_and_skips_by_reason(snow_gallery, tmp_path):
    report = scrape_gallery(snow_gallery.index_url, tmp_path / "flakes", **FAST)
    summary = dict(scrape.summarise_report(report).itertuples(index=False))
    assert summary == {
        "image links found": 19,
        "saved": 9,
        "already on disk": 0,
        "duplicate": 1,
        "skipped: too small": 2,
        "skipped: not an image": 2,
        "skipped: truncated": 2,
        "skipped: HTTP 404": 1,
        "skipped: robots.txt": 1,
        "skipped: other site": 1,
        "page skipped: robots.txt": 1,
        "page skipped: HTTP 404": 1,
    }


def test_max_images_caps_the_download_and_a_later_run_completes_it(snow_gallery, tmp_path):
    server, image_dir = snow_gallery.server, tmp_path / "flakes"
    report = scrape_gallery(snow_gallery.index_url, image_dir, max_images=3, **FAST)
    assert len(saved_images(image_dir)) == 3
    capped = report[report["reason"] == "over max_images (3)"]
    assert len(capped) > 0
    for url in capped["url"]:
        path = url.split(str(server.port), 1)[1].replace("%20", " ")
        assert server.count(path) == 0, url

    server.clear_log()
    again = scrape_gallery(snow_gallery.index_url, image_dir, max_images=3, **FAST)
    assert (again["status"] == "already on disk").sum() == 3
    assert not set(server.paths()) & snow_gallery.image_paths - {
        "/images/eiu-logo.png"  # a skip before the cap was reached: judged from memory anyway
    }

    report = scrape_gallery(snow_gallery.index_url, image_dir, **FAST)
    assert set(saved_images(image_dir).values()) == snow_gallery.expected_sha256
    assert (report["status"] == "already on disk").sum() == 3


def test_retries_a_5xx_then_reports_it(gallery_server, tmp_path):
    server = gallery_server
    server.add_page("/g/index.html", '<img src="ok.jpg"><img src="flaky.jpg"><img src="down.jpg">')
    for seed, name in enumerate(["ok.jpg", "flaky.jpg", "down.jpg"]):
        server.add_image("/g/" + name, seed)
    server.fail_first("/g/flaky.jpg", 2, status=503)
    server.fail_first("/g/down.jpg", 99, status=500)
    report = scrape_gallery(server.url("/g/index.html"), tmp_path / "flakes", retries=2, **FAST)
    by_file = dict(zip(report["url"].str.rsplit("/", n=1).str[-1], report["reason"], strict=True))
    assert by_file == {"ok.jpg": "", "flaky.jpg": "", "down.jpg": "HTTP 500"}
    assert server.count("/g/flaky.jpg") == 3
    assert server.count("/g/down.jpg") == 3  # one try and two retries, then give up
    assert sorted(saved_images(tmp_path / "flakes")) == ["flaky.jpg", "ok.jpg"]


def test_waits_between_requests(gallery_server, tmp_path):
    server = gallery_server
    server.add_page("/g/index.html", '<img src="a.jpg"><img src="b.jpg">')
    server.add_image("/g/a.jpg", 1)
    server.add_image("/g/b.jpg", 2)
    options = {**FAST, "request_delay_s": 0.1}
    scrape_gallery(server.url("/g/index.html"), tmp_path / "flakes", **options)
    times = [entry.time for entry in server.log]
    assert len(times) == 4  # robots.txt, index, two images
    assert min(later - earlier for earlier, later in itertools.pairwise(times)) >= 0.09


def test_robots_txt_missing_means_allowed_and_a_specific_block_is_obeyed(gallery_server, tmp_path):
    server = gallery_server
    server.add_page("/g/index.html", '<img src="a.jpg">')
    server.add_image("/g/a.jpg", 1)
    report = scrape_gallery(server.url("/g/index.html"), tmp_path / "one", **FAST)
    assert report["status"].tolist() == ["saved"]

    server.add_file("/robots.txt", b"User-agent: snowflake-uniqueness-tutorial\nDisallow: /g/\n")
    server.clear_log()
    with pytest.raises(scrape.GalleryRefusedError, match="robots.txt disallows") as caught:
        scrape_gallery(server.url("/g/index.html"), tmp_path / "two", **FAST)
    assert not isinstance(caught.value, ConnectionError)  # a refusal, not "cannot reach"
    assert server.paths() == ["/robots.txt"]


def test_safe_names_and_name_clashes(gallery_server, make_image, tmp_path):
    server = gallery_server
    server.add_page(
        "/g/index.html",
        """<img src="a/flake.jpg"><img src="b/flake.jpg"><img src="c/FLAKE.JPG">
        <img src="a/..%2F..%2Fevil.jpg"><img src="show.php?id=3"><img src="a/%2e%2e%2Fdot.jpg">""",
    )
    contents = {
        "/g/a/flake.jpg": server.add_image("/g/a/flake.jpg", 1),
        "/g/b/flake.jpg": server.add_image("/g/b/flake.jpg", 2),
        "/g/c/FLAKE.JPG": server.add_image("/g/c/FLAKE.JPG", 3),
        "/evil.jpg": server.add_image("/evil.jpg", 4),  # where the server resolves it
        "/g/show.php": server.add_image("/g/show.php", 5, fmt="PNG"),
        "/g/dot.jpg": server.add_image("/g/dot.jpg", 6),
    }
    image_dir = tmp_path / "out" / "flakes"
    report = scrape_gallery(server.url("/g/index.html"), image_dir, **FAST)
    assert (report["status"] == "saved").all(), report
    saved = saved_images(image_dir)
    tag = {path: sha256(data)[:8] for path, data in contents.items()}
    assert saved == {
        "flake.jpg": sha256(contents["/g/a/flake.jpg"]),
        f"flake-{tag['/g/b/flake.jpg']}.jpg": sha256(contents["/g/b/flake.jpg"]),
        f"FLAKE-{tag['/g/c/FLAKE.JPG']}.JPG": sha256(contents["/g/c/FLAKE.JPG"]),
        "evil.jpg": sha256(contents["/evil.jpg"]),
        "show.php.png": sha256(contents["/g/show.php"]),
        "dot.jpg": sha256(contents["/g/dot.jpg"]),
    }
    assert sorted(tmp_path.rglob("evil.jpg")) == [image_dir / "evil.jpg", server.root / "evil.jpg"]
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["flakes"]


def test_interrupted_run_leaves_nothing_half_written_and_resumes(
    snow_gallery, tmp_path, monkeypatch
):
    server, image_dir = snow_gallery.server, tmp_path / "flakes"
    real_check, calls = scrape.check_image, []

    def check_then_interrupt(data):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # the reader pressing "interrupt the kernel"
        return real_check(data)

    monkeypatch.setattr(scrape, "check_image", check_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        scrape_gallery(snow_gallery.index_url, image_dir, **FAST)
    partial = saved_images(image_dir)
    assert 0 < len(partial) < len(snow_gallery.expected_sha256)
    manifest = files.read_manifest(image_dir)
    assert dict(zip(manifest["file"], manifest["sha256"], strict=True)) == partial
    assert leftovers(tmp_path) == []

    monkeypatch.setattr(scrape, "check_image", real_check)
    server.clear_log()
    scrape_gallery(snow_gallery.index_url, image_dir, **FAST)
    assert set(saved_images(image_dir).values()) == snow_gallery.expected_sha256
    assert len(saved_images(image_dir)) == len(snow_gallery.expected_sha256)
    manifest = files.read_manifest(image_dir)
    for row in manifest.to_dict("records"):
        path = row["url"].split(str(server.port), 1)[1].replace("%20", " ")
        first_try = 3 if row["file"] == "retry.jpg" else 1  # two 500s, then the photo
        assert server.count(path) == (0 if row["file"] in partial else first_try), row["file"]


def test_failed_write_leaves_no_partial_file(gallery_server, tmp_path, monkeypatch):
    server = gallery_server
    server.add_page("/g/index.html", '<img src="a.jpg">')
    server.add_image("/g/a.jpg", 1)

    def disk_full(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        scrape_gallery(server.url("/g/index.html"), tmp_path / "flakes", **FAST)
    assert [path.name for path in (tmp_path / "flakes").iterdir()] == []


def test_existing_manifest_rows_are_kept(gallery_server, make_image, tmp_path):
    server, image_dir = gallery_server, tmp_path / "flakes"
    server.add_page("/g/index.html", '<img src="a.jpg">')
    server.add_image("/g/a.jpg", 1)
    earlier = make_image(50)
    files.atomic_write_bytes(image_dir / "earlier.jpg", earlier)
    earlier_row = {"file": "earlier.jpg", "url": "http://old/earlier.jpg", "page": "http://old/"}
    earlier_row.update(sha256=sha256(earlier), width=120, height=100)
    gone_row = dict(earlier_row, file="gone.jpg", url="http://old/gone.jpg")
    files.write_manifest(image_dir, [earlier_row, gone_row])

    scrape_gallery(server.url("/g/index.html"), image_dir, **FAST)
    manifest = files.read_manifest(image_dir)
    assert manifest["file"].tolist() == ["a.jpg", "earlier.jpg"]  # gone.jpg is no longer there
    assert manifest.iloc[1].to_dict() == earlier_row


# --- bad input --------------------------------------------------------------------------------


def test_unreachable_site_says_where_and_what_to_do(closed_port_url, tmp_path):
    with pytest.raises(scrape.GalleryUnreachableError) as caught:
        scrape_gallery(closed_port_url, tmp_path / "flakes", retries=1, **FAST)
    assert isinstance(caught.value, ConnectionError)
    message = str(caught.value)
    assert closed_port_url in message
    assert 'SOURCE="demo"' in message
    assert not (tmp_path / "flakes").exists()


def test_index_not_found_is_unreachable_too(gallery_server, tmp_path):
    url = gallery_server.url("/nowhere/images.html")
    with pytest.raises(scrape.GalleryUnreachableError, match="HTTP 404") as caught:
        scrape_gallery(url, tmp_path / "flakes", **FAST)
    assert url in str(caught.value)


def test_site_is_reachable(snow_gallery, closed_port_url):
    assert scrape.site_is_reachable(snow_gallery.index_url, timeout=2) is True
    assert scrape.site_is_reachable(closed_port_url, timeout=2) is False
    assert scrape.site_is_reachable(snow_gallery.server.url("/missing.html"), timeout=2) is False
    assert snow_gallery.server.log[0].user_agent == polite.USER_AGENT


def test_no_image_links_says_what_was_searched(gallery_server, tmp_path):
    server = gallery_server
    server.add_page("/g/index.html", '<p>No pictures.</p><a href="text.html">more</a>')
    server.add_page("/g/text.html", "<p>Still none.</p>")
    with pytest.raises(scrape.NoImagesFoundError) as caught:
        scrape_gallery(server.url("/g/index.html"), tmp_path / "flakes", **FAST)
    message = str(caught.value)
    assert server.url("/g/index.html") in message and server.url("/g/text.html") in message
    assert "2 page(s)" in message and "<img>" in message and 'SOURCE="demo"' in message


def test_only_broken_images_is_no_images_with_the_report(gallery_server, tmp_path):
    server = gallery_server
    server.add_page("/g/index.html", '<img src="missing.jpg"><img src="icon.png">')
    server.add_image("/g/icon.png", 1, size=(16, 16), fmt="PNG")
    with pytest.raises(scrape.NoImagesFoundError, match="too small: 1") as caught:
        scrape_gallery(server.url("/g/index.html"), tmp_path / "flakes", **FAST)
    assert caught.value.report["reason"].tolist() == ["HTTP 404", "too small (16x16)"]
    assert saved_images(tmp_path / "flakes") == {}


@pytest.mark.parametrize(
    "options", [{"max_images": 0}, {"min_side": 0}, {"depth": -1}, {"request_delay_s": -1}]
)
def test_bad_parameters_are_refused(gallery_server, tmp_path, options):
    gallery_server.add_page("/g/index.html", '<img src="a.jpg">')
    gallery_server.add_image("/g/a.jpg", 1)
    with pytest.raises(ValueError):
        scrape_gallery(gallery_server.url("/g/index.html"), tmp_path / "f", **{**FAST, **options})


# --- hostile galleries ------------------------------------------------------------------------


def test_hostile_gallery_saves_exactly_the_good_photos_and_lists_every_trap(
    hostile_gallery, tmp_path
):
    gallery, image_dir = hostile_gallery, tmp_path / "flakes"
    report = scrape_gallery(gallery.index_url, image_dir)

    assert set(saved_images(image_dir).values()) == gallery.expected_sha256
    assert len(saved_images(image_dir)) == len(gallery.expected_sha256)
    assert gallery.elsewhere.log == []  # never asked: not for an image, not for a page
    assert not any("/private/" in path for path in gallery.server.paths())  # robots.txt
    skipped = report[report["status"] == "skipped"]
    reasons = {
        kind: dict(zip(part["url"], part["reason"], strict=True))
        for kind, part in skipped.groupby("kind")
    }
    assert reasons["image"].keys() == gallery.image_skips.keys()
    for url, reason in gallery.image_skips.items():
        assert reasons["image"][url].startswith(reason), (url, reasons["image"][url])
    assert reasons["page"].keys() == gallery.page_skips.keys()
    for url, reason in gallery.page_skips.items():
        assert reasons["page"][url].startswith(reason), (url, reasons["page"][url])
    assert reasons["link"].keys() == gallery.malformed_links
    assert all(reason.startswith("malformed URL") for reason in reasons["link"].values())
    summary = dict(scrape.summarise_report(report).itertuples(index=False))
    assert summary["saved"] == 4
    assert summary["page skipped: redirect loop"] == 2
    assert summary["link skipped: malformed URL"] == 4
    assert summary["skipped: too large"] == 1
    assert leftovers(tmp_path) == []


def test_redirect_hops_are_limited_and_each_is_requested_once(hostile_gallery, tmp_path):
    server = hostile_gallery.server
    scrape_gallery(hostile_gallery.index_url, tmp_path / "flakes")
    chain = [path for path in server.paths() if path.startswith("/h/chain")]
    assert chain == [f"/h/chain{step}.html" for step in range(polite.MAX_REDIRECTS + 1)]
    assert server.count("/h/loop.html") == 1
    assert server.count("/h/selfloop.jpg") == 1
    assert (server.count("/h/ping.html"), server.count("/h/pong.html")) == (1, 1)


def test_gzip_bombs_are_stopped_at_the_cap_with_memory_bounded(gallery_server, tmp_path):
    server = gallery_server
    bomb = gzip_bomb()  # built before measuring
    server.serve_gzip("/g/bomb.html", bomb)
    server.serve_gzip("/g/bomb.jpg", bomb, content_type="image/jpeg")
    server.add_page(
        "/g/index.html", '<a href="bomb.html">b</a><img src="bomb.jpg"><img src="a.jpg">'
    )
    server.add_image("/g/a.jpg", 1)
    tracemalloc.start()
    try:
        report = scrape_gallery(server.url("/g/index.html"), tmp_path / "flakes")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    reasons = dict(zip(report["url"].str.rsplit("/", n=1).str[-1], report["reason"], strict=True))
    assert reasons["bomb.html"] == f"too large (> {scrape.MAX_PAGE_BYTES >> 20:g} MiB)"
    assert reasons["bomb.jpg"] == f"too large (> {scrape.MAX_IMAGE_BYTES >> 20:g} MiB)"
    assert reasons["a.jpg"] == ""
    # Reading up to the image cap costs about the cap, never the bombs' 200 MiB.
    assert peak < scrape.MAX_IMAGE_BYTES + 30 * 2**20 < BOMB_BYTES


def test_gzip_bomb_robots_txt_is_read_only_up_to_the_cap(gallery_server, tmp_path):
    """200 MiB of blanks: its first 512 KiB hold no rule, so all is allowed; memory stays small."""
    server = gallery_server
    server.serve_gzip("/robots.txt", gzip_bomb(), content_type="text/plain")
    server.add_page("/g/index.html", '<img src="a.jpg">')
    server.add_image("/g/a.jpg", 1)
    tracemalloc.start()
    try:
        report = scrape_gallery(server.url("/g/index.html"), tmp_path / "flakes", **FAST)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.loc[report["kind"] == "image", "status"].tolist() == ["saved"]
    assert report.loc[report["kind"] == "robots.txt", "status"].tolist() == ["note"]
    assert peak < 20 * 2**20 < BOMB_BYTES


def large_robots_txt() -> bytes:
    """A robots.txt past the cap: a rule first, padding, a rule cut by the cap, then more.

    The cap falls right after ``Disallow: /`` of the cut rule: read as it stands, that would
    refuse the whole site. The last rule, past the cap, refuses everything too.
    """
    head = b"User-agent: *\nDisallow: /g/private/\n"
    cut_line = b"Disallow: /g/never-whole/\n"
    padding = polite.MAX_ROBOTS_BYTES - len(head) - len(b"Disallow: /")
    full, rest = divmod(padding, 64)
    filler = (b"#" * 63 + b"\n") * full + (b"#" * (rest - 1) + b"\n" if rest else b"")
    assert len(head + filler + b"Disallow: /") == polite.MAX_ROBOTS_BYTES
    return head + filler + cut_line + b"# more\n" * 20_000 + b"Disallow: /\n"


def test_robots_txt_past_the_cap_is_obeyed_up_to_it_in_whole_lines_and_noted(
    gallery_server, tmp_path
):
    server = gallery_server
    server.add_file("/robots.txt", large_robots_txt())
    server.add_page("/g/index.html", '<a href="private/p.html">p</a><img src="a.jpg">')
    server.add_page("/g/private/p.html", '<img src="../b.jpg">')
    server.add_image("/g/a.jpg", 1)
    report = scrape_gallery(server.url("/g/index.html"), tmp_path / "flakes", **FAST)
    by_kind = {row.kind: (row.status, row.reason) for row in report.itertuples()}
    assert by_kind["image"] == ("saved", "")
    assert by_kind["page"] == ("skipped", "robots.txt")  # the first rule holds
    note = "larger than 512 KiB: its first 512 KiB obeyed, the rest ignored (RFC 9309)"
    assert by_kind["robots.txt"] == ("note", note)
    summary = dict(scrape.summarise_report(report).itertuples(index=False))
    assert summary[f"note: robots.txt {note}"] == 1
    assert "/g/private/p.html" not in server.paths()


@pytest.mark.parametrize(
    ("status", "allowed"),
    [(404, True), (410, True), (401, False), (403, False), (500, False), (503, False)],
)
def test_robots_txt_status_decides_as_rfc_9309_says(gallery_server, tmp_path, status, allowed):
    """Not there (4xx): no rules. Server error (5xx, after the retries): disallow all. A
    robots.txt locked away (401, 403): the site is not crawled either."""
    server = gallery_server
    server.fail_first("/robots.txt", 99, status=status)
    server.add_page("/g/index.html", '<img src="a.jpg">')
    server.add_image("/g/a.jpg", 1)
    if allowed:
        report = scrape_gallery(server.url("/g/index.html"), tmp_path / "flakes", **FAST)
        assert report["status"].tolist() == ["saved"]
        return
    with pytest.raises(scrape.GalleryRefusedError, match="robots.txt disallows"):
        scrape_gallery(server.url("/g/index.html"), tmp_path / "flakes", retries=2, **FAST)
    assert server.paths() == ["/robots.txt"] * (3 if status >= 500 else 1)


def test_robots_txt_that_cannot_be_decoded_refuses_the_site(gallery_server, tmp_path):
    server = gallery_server
    server.serve_gzip("/robots.txt", b"this is not gzip", content_type="text/plain")
    server.add_page("/g/index.html", '<img src="a.jpg">')
    with pytest.raises(scrape.GalleryRefusedError, match="undecodable body"):
        scrape_gallery(server.url("/g/index.html"), tmp_path / "flakes", **FAST)
    assert server.paths() == ["/robots.txt"]


@pytest.mark.parametrize(
    ("robots", "reason"),
    [
        ("User-agent: *\nDisallow: /\n", ""),
        ("User-agent: *\nCrawl-delay: 3600\n", " (robots.txt Crawl-delay (3600 s, over 60 s))"),
    ],
)
def test_robots_txt_refusing_everything_is_a_refusal_not_unreachable(
    gallery_server, tmp_path, robots, reason
):
    server = gallery_server
    server.add_file("/robots.txt", robots.encode())
    server.add_page("/g/index.html", '<img src="a.jpg">')
    with pytest.raises(scrape.GalleryRefusedError) as caught:
        scrape_gallery(server.url("/g/index.html"), tmp_path / "flakes")
    assert not isinstance(caught.value, ConnectionError)
    start = f"robots.txt disallows {server.url('/g/index.html')} for {polite.USER_AGENT!r}"
    assert str(caught.value).startswith(start + reason + ":")
    assert "Cannot reach" not in str(caught.value)
    assert server.paths() == ["/robots.txt"]


def test_trickling_server_meets_the_deadline(gallery_server, make_image, tmp_path):
    server = gallery_server
    server.add_page("/g/index.html", '<img src="slow.jpg"><img src="a.jpg">')
    server.add_image("/g/a.jpg", 1)
    slow = make_image(2)
    server.respond("/g/slow.jpg", slow, headers={"Content-Type": "image/jpeg"}, trickle_s=0.02)
    report = scrape_gallery(
        server.url("/g/index.html"), tmp_path / "flakes", deadline_s=0.5, timeout=(1, 0.3)
    )
    reasons = dict(zip(report["url"].str.rsplit("/", n=1).str[-1], report["reason"], strict=True))
    assert reasons == {"slow.jpg": "too slow (over 0.5 s)", "a.jpg": ""}
    assert 0 < server.sent("/g/slow.jpg") < len(slow)  # the client hung up early


def test_crawl_delay_and_redirect_hops_wait(gallery_server, tmp_path, monkeypatch):
    server = gallery_server
    server.add_file("/robots.txt", b"User-agent: *\nCrawl-delay: 3\n")
    server.add_page("/g/index.html", '<img src="moved.jpg">')
    server.redirect("/g/moved.jpg", "/g/a.jpg")
    server.add_image("/g/a.jpg", 1)
    pauses = []
    monkeypatch.setattr(polite.time, "sleep", pauses.append)  # record instead of waiting
    scrape_gallery(server.url("/g/index.html"), tmp_path / "flakes", request_delay_s=0.5)
    assert server.paths() == ["/robots.txt", "/g/index.html", "/g/moved.jpg", "/g/a.jpg"]
    # Every request after robots.txt waits the site's Crawl-delay (longer than the 0.5 s
    # asked for), the redirect's second hop included.
    assert len(pauses) == 3
    assert all(2.9 < pause <= 3 for pause in pauses)


def test_manifest_is_written_as_files_arrive(snow_gallery, tmp_path, monkeypatch):
    image_dir, real_check, on_disk = tmp_path / "flakes", scrape.check_image, []

    def check_and_look(data):
        on_disk.append((set(saved_images(image_dir)), set(files.read_manifest(image_dir)["file"])))
        return real_check(data)

    monkeypatch.setattr(scrape, "check_image", check_and_look)
    scrape_gallery(snow_gallery.index_url, image_dir)
    assert len(on_disk) > 5
    assert all(saved == listed for saved, listed in on_disk)  # never a file it does not list
    assert on_disk[-1][0]  # files had arrived before the last check


def test_next_run_removes_partial_files(gallery_server, tmp_path):
    server, image_dir = gallery_server, tmp_path / "flakes"
    server.add_page("/g/index.html", '<img src="a.jpg">')
    server.add_image("/g/a.jpg", 1)
    image_dir.mkdir()
    (image_dir / ".a.jpg.0badc0de.part").write_bytes(b"half a photo")
    scrape_gallery(server.url("/g/index.html"), image_dir)
    assert sorted(path.name for path in image_dir.iterdir()) == [
        "a.jpg",
        files.MANIFEST_NAME,
    ]


def test_readme_states_the_caps_the_deadline_and_the_redirect_limit():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    paragraph = " ".join(readme[readme.index("The scraper is polite") :].split("\n\n")[0].split())
    assert f"{scrape.MAX_PAGE_BYTES >> 20} MiB per page" in paragraph
    assert f"{polite.MAX_ROBOTS_BYTES >> 10} KiB for robots.txt" in paragraph
    assert f"{scrape.MAX_IMAGE_BYTES >> 20} MiB per image" in paragraph
    assert f"total deadline of {polite.REQUEST_DEADLINE_S:g} s" in paragraph
    assert f"at most {polite.MAX_REDIRECTS} hops" in paragraph
    assert f"up to {polite.MAX_CRAWL_DELAY_S:g} s" in paragraph


def test_malformed_index_url_says_so():
    with polite.PoliteSession() as session, pytest.raises(ValueError, match="is malformed"):
        scrape.find_gallery_pages(session, "http://[oops/images.html")
