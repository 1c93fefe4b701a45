"""Notebook 01 end to end with papermill: the fixture gallery on 127.0.0.1, and the demo source."""

from __future__ import annotations

import papermill as pm
import pytest

from snowflake_tools import files

pytestmark = pytest.mark.slow

NOTEBOOK = "01_download_snowflakes.ipynb"


@pytest.fixture
def run(run_notebook):
    """Run notebook 01 without waiting between requests to the loopback server."""
    return lambda **parameters: run_notebook(NOTEBOOK, REQUEST_DELAY_S=0, **parameters)


def saved_sha256(image_dir):
    return {files.sha256_file(p) for p in image_dir.iterdir() if files.is_image_name(p.name)}


def test_saves_exactly_the_distinct_photos_then_transfers_nothing(run, snow_gallery, tmp_path):
    image_dir = tmp_path / "flakes"
    run(BASE_URL=snow_gallery.index_url, IMAGE_DIR=str(image_dir), SOURCE="web")
    assert saved_sha256(image_dir) == snow_gallery.expected_sha256
    manifest = files.read_manifest(image_dir)
    assert set(manifest["sha256"]) == snow_gallery.expected_sha256
    assert all((image_dir / name).is_file() for name in manifest["file"])
    assert not [p for p in image_dir.iterdir() if p.name.endswith(".part")]

    snow_gallery.server.clear_log()
    output = run(BASE_URL=snow_gallery.index_url, IMAGE_DIR=str(image_dir), SOURCE="auto")
    requested = set(snow_gallery.server.paths())
    assert not requested & set(snow_gallery.image_paths)
    assert "already on disk" in output
    assert saved_sha256(image_dir) == snow_gallery.expected_sha256


def test_hostile_gallery_completes_and_saves_exactly_the_good_photos(
    run, hostile_gallery, tmp_path
):
    image_dir = tmp_path / "flakes"
    output = run(BASE_URL=hostile_gallery.index_url, IMAGE_DIR=str(image_dir), SOURCE="web")
    assert saved_sha256(image_dir) == hostile_gallery.expected_sha256
    assert set(files.read_manifest(image_dir)["sha256"]) == hostile_gallery.expected_sha256
    assert hostile_gallery.elsewhere.log == []  # off-site redirects were never followed
    for reason in ["redirect loop", "too many redirects", "too large", "malformed URL"]:
        assert reason in output, reason  # the summary lists what was skipped, and why


def test_auto_falls_back_to_demo_crystals(run, closed_port_url, tmp_path):
    image_dir = tmp_path / "flakes"
    output = run(BASE_URL=closed_port_url, IMAGE_DIR=str(image_dir), SOURCE="auto", DEMO_COUNT=9)
    assert "DEMO" in output and "cannot be reached" in output
    manifest = files.read_manifest(image_dir)
    assert len(manifest) == 9
    assert manifest["url"].str.startswith(files.DEMO_PAGE).all()
    assert saved_sha256(image_dir) == set(manifest["sha256"])


def test_web_source_without_the_site_names_the_url_and_the_way_out(run, closed_port_url, tmp_path):
    with pytest.raises(pm.PapermillExecutionError) as raised:
        run(BASE_URL=closed_port_url, IMAGE_DIR=str(tmp_path / "x"), SOURCE="web")
    assert closed_port_url in str(raised.value)
    assert 'SOURCE="demo"' in str(raised.value)


def test_unknown_source_is_refused(run, tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="SOURCE = 'ftp' is not allowed"):
        run(IMAGE_DIR=str(tmp_path / "x"), SOURCE="ftp")
