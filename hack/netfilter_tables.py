"""iptables-save output as tables, chains and rules, and deleting the empty nf_tables tables
that appeared since a given state (over netlink: iptables-nft cannot, and `nft` is not installed)."""

from __future__ import annotations

import os
import socket
import struct

from cluster_common import run

BUILTIN_CHAINS = {
    "filter": {"INPUT", "FORWARD", "OUTPUT"},
    "nat": {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
    "mangle": {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
    "raw": {"PREROUTING", "OUTPUT"},
    "security": {"INPUT", "FORWARD", "OUTPUT"},
}


def iptables_tables(save: str = "iptables-save") -> dict[str, dict]:
    """{table: {"chains": {chain: policy or "-"}, "rules": [rule lines]}} as `save` prints them,
    without counters and comments; {} when the command is missing."""
    try:
        out = run(save, check=False).stdout
    except FileNotFoundError:
        return {}
    tables: dict[str, dict] = {}
    table: dict = {}
    for line in out.splitlines():
        if line.startswith("*"):
            table = tables.setdefault(line[1:], {"chains": {}, "rules": []})
        elif line.startswith(":"):
            name, policy = line[1:].split()[:2]
            table["chains"][name] = policy
        elif line.startswith("-A "):
            table["rules"].append(line)
    return tables


def table_is_empty(name: str, table: dict) -> bool:
    """Only built-in chains, all with policy ACCEPT, and no rules: the same as no table at all."""
    return not table["rules"] and all(
        chain in BUILTIN_CHAINS.get(name, ()) and policy == "ACCEPT"
        for chain, policy in table["chains"].items()
    )


def nft_delete_table(family: str, table: str) -> None:
    """Delete one nf_tables table (family "ip" or "ip6") over netlink: iptables-nft cannot delete
    tables, and the `nft` CLI is not installed. Callers check the table is theirs and empty."""
    nfnl_subsys_nftables, nft_msg_deltable = 10, 2
    nlm_f_request, nlm_f_ack, nlmsg_error = 1, 4, 2

    def msg(msg_type: int, flags: int, seq: int, fam: int, res_id: int, payload: bytes = b"") -> bytes:
        body = struct.pack("=BB", fam, 0) + struct.pack("!H", res_id) + payload
        return struct.pack("=IHHII", 16 + len(body), msg_type, flags, seq, 0) + body

    name = table.encode() + b"\0"
    attr = struct.pack("=HH", 4 + len(name), 1) + name  # NFTA_TABLE_NAME
    attr += b"\0" * (-len(attr) % 4)
    fam = {"ip": 2, "ip6": 10}[family]
    batch = (
        msg(0x10, nlm_f_request, 1, 0, nfnl_subsys_nftables)  # NFNL_MSG_BATCH_BEGIN
        + msg((nfnl_subsys_nftables << 8) | nft_msg_deltable, nlm_f_request | nlm_f_ack, 2, fam, 0, attr)
        + msg(0x11, nlm_f_request, 3, 0, nfnl_subsys_nftables)  # NFNL_MSG_BATCH_END
    )
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12) as sock:  # NETLINK_NETFILTER
        sock.settimeout(5)
        sock.bind((0, 0))
        sock.sendto(batch, (0, 0))
        data = sock.recv(65536)
    off = 0
    while off + 16 <= len(data):
        length, msg_type = struct.unpack_from("=IH", data, off)
        if msg_type == nlmsg_error:
            (err,) = struct.unpack_from("=i", data, off + 16)
            if err:
                raise OSError(-err, f"deleting nf_tables table {family} {table}: {os.strerror(-err)}")
        off += max(length + (-length % 4), 16)


def delete_new_empty_tables(before: dict[str, dict[str, dict]]) -> list[str]:
    """Delete the ip/ip6 nf_tables tables that did not exist in `before` ({"ip": iptables_tables(),
    "ip6": ...}) and are empty now; return what could not be deleted."""
    failed = []
    for family, save in (("ip", "iptables-save"), ("ip6", "ip6tables-save")):
        for name, table in iptables_tables(save).items():
            if name not in before.get(family, {}) and table_is_empty(name, table):
                try:
                    nft_delete_table(family, name)
                except OSError as e:
                    failed.append(str(e))
    return failed
