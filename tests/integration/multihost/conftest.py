"""Fixtures for tests on separate hosts: a cluster of namespace hosts per test module (see hosts.py).

``hosts`` is module-scoped: every test of a module shares one cluster (head, w1, w2 by default),
started with the shipped ``deploy/fleet-node.sh``. A module asks for another shape by overriding
``host_specs``::

    @pytest.fixture(scope="module")
    def host_specs():
        return default_specs(workers=3)          # or [HostSpec("head", "head"), HostSpec("w1", ...)]

Where namespaces are not permitted (not root, no ``ip netns``, no unshare) the tests skip and say why.
Tear-down kills every host and fails the module's last test if any process or namespace survived.
"""

from __future__ import annotations

import pytest

from .hosts import HostCluster, default_specs, namespaces_unavailable


@pytest.fixture(scope="module")
def host_specs():
    """The hosts of this module's cluster (override in a test module for another shape)."""
    return default_specs()


@pytest.fixture(scope="module")
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
