"""Fixtures for tests on separate hosts: one cluster of namespace hosts shared by the folder (see hosts.py).

``hosts`` is package-scoped: every test of this folder shares one cluster (head, w1, w2), started
with the shipped ``deploy/fleet-node.sh`` (a start costs ~30 s of the suite's 35-minute budget; tests
that break a host leave it booted again for the next). A shape of its own needs a cluster of its own:
``HostCluster(specs)`` in a module fixture (and no other cluster running meanwhile).

Where namespaces are not permitted (not root, no ``ip netns``, no unshare) the tests skip and say why.
Tear-down kills every host and fails the folder's last test if any process or namespace survived.
"""

from __future__ import annotations

import pytest

from .hosts import HostCluster, default_specs, namespaces_unavailable


@pytest.fixture(scope="package")
def host_specs():
    """The hosts of the shared cluster."""
    return default_specs()


@pytest.fixture(scope="package")
def hosts(host_specs, tmp_path_factory):
    """A started :class:`HostCluster` (``hosts.head``, ``hosts.workers``, ``hosts["w1"]``)."""
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    cluster = HostCluster(host_specs, base_dir=tmp_path_factory.mktemp("hosts"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
