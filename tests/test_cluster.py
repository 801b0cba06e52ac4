"""The build on an existing multi-node Ray cluster, reached by address."""

import pyarrow.parquet as pq
import pytest

from curate.build import build
from tests.conftest import tree_bytes

OUTPUTS = ["shards", "manifest.parquet", "filtered.parquet", "quarantine.parquet",
           "croissant.json", "validation.json"]


@pytest.mark.slow
@pytest.mark.cluster
def test_build_on_a_two_node_cluster_by_address(tmp_path, mask_folder, write_recipe):
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    recipe = write_recipe([{"name": "f", "path": str(mask_folder), "format": "image_mask",
                            "layout": {"images": ["img/*.png"],
                                       "masks": "seg/{stem}_seg.png"}}],
                          run={"units_per_part": 1})
    build(recipe, tmp_path / "inproc", executor="local", log=lambda m: None)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        record = build(recipe, tmp_path / "out", executor="ray", address=cluster.address,
                       log=lambda m: None)
        assert not ray.is_initialized()  # the build disconnects, the cluster stays up
        assert record["counts"]["units_run"] == 4
        assert record["counts"]["filter"]["kept"] == 3
        assert pq.read_table(tmp_path / "out" / "quarantine.parquet").num_rows == 1
    finally:
        cluster.shutdown()
    # two nodes give the same bytes as one process
    for name in OUTPUTS:
        assert tree_bytes(tmp_path / "out" / name) == tree_bytes(tmp_path / "inproc" / name), name
