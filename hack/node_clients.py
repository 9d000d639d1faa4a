"""Talking to the node's containerd (ctr), to the plane (kubectl, the API) and to the cluster DNS."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
from pathlib import Path

from node_common import CLUSTER_DNS, Node, NodeError, _run, cluster


def _ctr(node: Node, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return _run("ctr", "--address", str(node.sock), "--namespace", "k8s.io", *args, timeout=timeout)


def _kubectl(
    node: Node, *args: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    state = node.load()
    argv = [state["kubectl"], f"--kubeconfig={node.kubeconfig}", *args]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)


def _plane(node: Node) -> tuple[dict, Path]:
    cdir = Path(node.load()["cluster_dir"])
    return cluster.Plane(cdir).load(), cdir / "pki"


def _api_json(node: Node, path: str) -> dict:
    state, pki = _plane(node)
    code, body = cluster.api_get(state, pki, path)
    if code != 200:
        raise NodeError(f"GET {path}: HTTP {code} {body[:200]!r}")
    return json.loads(body)


def _condition(obj: dict, kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True"
        for c in obj.get("status", {}).get("conditions", [])
    )


def dns_query(name: str, server: str = CLUSTER_DNS, timeout: float = 2) -> list[str]:
    """A records for `name` from `server` (UDP 53): the host asks the cluster DNS through its
    ClusterIP, which kube-proxy maps onto the CoreDNS pod."""
    qid = os.getpid() & 0xFFFF
    packet = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    packet += (
        b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, (server, 53))
        data = s.recv(4096)
    _, flags, qd, an, _, _ = struct.unpack_from("!HHHHHH", data)
    if flags & 0xF:
        raise NodeError(f"DNS {name}: rcode {flags & 0xF}")
    off = 12
    for _ in range(qd):
        while data[off]:
            off += data[off] + 1
        off += 5
    found = []
    for _ in range(an):
        off += 2 if data[off] & 0xC0 == 0xC0 else len(data[off:].split(b"\0", 1)[0]) + 1
        rtype, _, _, rdlen = struct.unpack_from("!HHIH", data, off)
        off += 10
        if rtype == 1 and rdlen == 4:
            found.append(socket.inet_ntoa(data[off : off + 4]))
        off += rdlen
    return found
