"""The same extraction on a two-node Ray cluster started on this machine: both nodes work."""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported: loopback only

import pytest
import ray
from helpers import LAYER, SIZE, make_flakes

from snowflake_tools import features, images, ray_extract

pytestmark = pytest.mark.slow


def test_both_nodes_extract(two_node_cluster, tmp_path):
    info = ray_extract.start_ray(two_node_cluster.address)
    assert info == {"address_kind": "cluster", "nodes": 2, "cpus": 4}

    image_dir = make_flakes(tmp_path / "flakes", n=23)
    base, _ = features.load_vgg16(None, SIZE)
    extractor = features.cut_at_layer(base, LAYER)
    folder = ray_extract.shard_folder(tmp_path / "results", extractor, SIZE, "gap")
    arguments = dict(
        model_settings={"weights": None, "image_size": SIZE},
        layer=LAYER,
        feature_vector="gap",
        expected_fingerprint=features.fingerprint(extractor),
    )
    paths = images.list_images(image_dir)
    context = ray.data.DataContext.get_current()
    settings = ("wait_for_min_actors_s", "scheduling_strategy")
    before = [getattr(context, name) for name in settings]
    run = ray_extract.extract_to_shards(paths, image_dir, folder, arguments, batch_size=2)
    after = [getattr(context, name) for name in settings]
    assert after == before  # the pool's settings do not leak into the user's later datasets

    assert len(run.work_by_node) == 2, run.work_by_node
    assert all(count > 0 for count in run.work_by_node.values())
    assert sum(run.work_by_node.values()) == 24  # 25 files, one copy
    assembled = ray_extract.assemble(run.listing, folder)
    assert len(assembled.files) == 24 and len(assembled.skipped) == 1
