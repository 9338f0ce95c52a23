"""The record the node's teardown is checked against: what counts as a change of the host (plain data, no node)."""

from __future__ import annotations

from pathlib import Path

from tests.support.node import HostState

BEFORE = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
"""
EMPTY_NAT_WITH_COUNTERS = BEFORE.replace("[0:0]", "[12:720]") + """*nat
:PREROUTING ACCEPT [3:180]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [5:300]
:POSTROUTING ACCEPT [5:300]
COMMIT
"""
LEFT_BEHIND = EMPTY_NAT_WITH_COUNTERS.replace(":POSTROUTING ACCEPT [5:300]\n", """:POSTROUTING ACCEPT [5:300]
:KUBE-SERVICES - [0:0]
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
""")


def state(dump: str) -> HostState:
    return HostState(sysctls={"kernel/panic": "1"}, iptables={"iptables": dump, "ip6tables": ""},
                     paths={Path("/var/log")}, mounts=set(), cgroups=set())


def test_counters_and_an_empty_table_are_no_change():
    assert state(BEFORE).differences(state(EMPTY_NAT_WITH_COUNTERS)) == []


def test_a_chain_a_sysctl_a_path_a_mount_left_behind_are_named():
    after = state(LEFT_BEHIND)
    after.sysctls["kernel/panic"] = "10"
    after.paths.add(Path("/var/lib/kubelet"))
    after.mounts.add("/run/netns/cni-1234")
    found = state(BEFORE).differences(after)
    assert found == ["sysctl kernel/panic: 1 then 10", "iptables rules differ",
                     "paths added: ['/var/lib/kubelet']", "mounts added: ['/run/netns/cni-1234']"]
