"""A one-node cluster for the stream/event/crash/resume tests: the head carries the tags, so only one
raylet has to start (cheaper on a busy 2-core machine); the multi-node path is in test_streams.py."""

from __future__ import annotations


def single_node_cluster(resources: dict[str, float], num_cpus: int = 2):
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": num_cpus, "resources": resources,
                                                            "include_dashboard": False})
    cluster.worker_nodes_list = []
    ray.init(address=cluster.address, namespace="fleet-tests", logging_level="WARNING", log_to_driver=False)
    return cluster
