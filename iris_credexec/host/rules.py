"""Redirection rules that send task traffic for the metadata server to the concealment proxy.

Printed, not applied. Both forms are idempotent: every iptables rule is added only if
`-C` does not find it, and the nftables table is declared, deleted and re-created, so
applying the output twice leaves one copy.
"""

from __future__ import annotations

import shlex

METADATA_IP = "169.254.169.254"


def iptables(bridge: str, bridge_proxy: str, host_proxy: str | None, task_cgroup: str | None) -> str:
    q = shlex.quote
    lines = [
        "# iris-credexec host conceal: task traffic for the metadata server goes to the proxy.",
        f"# Bridge-networked tasks ({bridge}): DNAT port 80 to the proxy, drop anything else for the metadata address.",
    ]

    def rule(table: str, chain: str, spec: str, insert: bool = False) -> str:
        add = "-I" if insert else "-A"
        return f"iptables -t {table} -C {chain} {spec} 2>/dev/null || iptables -t {table} {add} {chain} {spec}"

    lines.append(
        rule(
            "nat",
            "PREROUTING",
            f"-i {q(bridge)} -d {METADATA_IP}/32 -p tcp --dport 80 -j DNAT --to-destination {q(bridge_proxy)}",
        )
    )
    lines.append(rule("filter", "DOCKER-USER", f"-i {q(bridge)} -d {METADATA_IP}/32 -j DROP", insert=True))
    if host_proxy and task_cgroup:
        lines.append(
            f"# Host-networked tasks (cgroup {task_cgroup} and below; run them with --cgroup-parent={task_cgroup}): "
            "the worker and system daemons keep the real server."
        )
        lines.append(
            rule(
                "nat",
                "OUTPUT",
                f"-d {METADATA_IP}/32 -p tcp --dport 80 -m cgroup --path {q(task_cgroup)} -j DNAT --to-destination {q(host_proxy)}",
            )
        )
    return "\n".join(lines) + "\n"


def nftables(bridge: str, bridge_proxy: str, host_proxy: str | None, task_cgroup: str | None) -> str:
    bridge_ip, bridge_port = bridge_proxy.rsplit(":", 1)
    lines = [
        "# iris-credexec host conceal (nft -f): declared, deleted and re-created, so applying twice leaves one copy.",
        "table inet iris_credexec",
        "delete table inet iris_credexec",
        "table inet iris_credexec {",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        f'    iifname "{bridge}" ip daddr {METADATA_IP} tcp dport 80 dnat ip to {bridge_ip}:{bridge_port}',
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        f'    iifname "{bridge}" ip daddr {METADATA_IP} drop',
        "  }",
    ]
    if host_proxy and task_cgroup:
        host_ip, host_port = host_proxy.rsplit(":", 1)
        depth = task_cgroup.strip("/").count("/") + 1
        lines += [
            "  chain output {",
            "    type nat hook output priority -100; policy accept;",
            f'    socket cgroupv2 level {depth} "{task_cgroup.strip("/")}" ip daddr {METADATA_IP} tcp dport 80 dnat ip to {host_ip}:{host_port}',
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"
