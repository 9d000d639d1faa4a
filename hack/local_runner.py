#!/usr/bin/env python3
"""Local kubelet for job pods on the kwok plane: pods annotated `maps.kube-mapserver.io/runner`
that kwok marked Running have their container command run *on this machine*; the exit code and
termination message go back as annotations, which kwok's `kms-job-complete` stage turns into the
pod's final status (hack/kwok-stages.yaml). Volumes are mapped to the hostPath of their bound PV.

    hack/local_runner.py [--kubeconfig PATH]     (make dev and the tests start it)
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client, config, watch

RUNNER = "maps.kube-mapserver.io/runner"
EXIT = "maps.kube-mapserver.io/local-exit-code"
MESSAGE = "maps.kube-mapserver.io/local-termination-message"
PROGRESS = "maps.kube-mapserver.io/progress"
log = logging.getLogger("local-runner")


def host_path_of(core: client.CoreV1Api, namespace: str, volume) -> str | None:
    if volume.persistent_volume_claim:
        pvc = core.read_namespaced_persistent_volume_claim(
            volume.persistent_volume_claim.claim_name, namespace
        )
        if not pvc.spec.volume_name:
            return None
        pv = core.read_persistent_volume(pvc.spec.volume_name)
        src = pv.spec.host_path or pv.spec.local
        return src.path if src else None
    if volume.host_path:
        return volume.host_path.path
    return None


def local_argv(core: client.CoreV1Api, pod, scratch: Path) -> tuple[list[str], Path, dict]:
    """The container's command with mount paths and the termination log mapped onto this machine."""
    c = pod.spec.containers[0]
    mapping: dict[str, str] = {}
    volumes = {v.name: v for v in pod.spec.volumes or []}
    for m in c.volume_mounts or []:
        v = volumes.get(m.name)
        target = host_path_of(core, pod.metadata.namespace, v) if v else None
        if target is None:  # emptyDir and the like: a scratch directory
            target = str(scratch / m.name)
            os.makedirs(target, exist_ok=True)
        mapping[m.mount_path] = target
    term_path = c.termination_message_path or "/dev/termination-log"
    term_local = scratch / "termination-log"
    mapping[term_path] = str(term_local)

    def rewrite(arg: str) -> str:
        for src, dst in sorted(mapping.items(), key=lambda kv: -len(kv[0])):
            if arg == src or arg.startswith(src.rstrip("/") + "/"):
                return dst + arg[len(src) :]
        return arg

    argv = [rewrite(a) for a in (c.command or []) + (c.args or [])]
    exe = Path(sys.executable).parent / argv[0]
    if exe.exists():
        argv[0] = str(exe)
    elif shutil.which(argv[0]) is None:
        raise FileNotFoundError(f"{argv[0]} is not installed here")
    env = {**os.environ, **{e.name: rewrite(e.value or "") for e in c.env or [] if e.value is not None}}
    return argv, term_local, env


def run_streaming(core: client.CoreV1Api, pod, argv: list[str], env: dict) -> tuple[int, str, str]:
    """Run the container command; its progress lines (JSON with "progress", on stderr) go into the
    pod's PROGRESS annotation at most every 2 s: the log stream a real kubelet would serve."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    reader.start()
    err: list[str] = []
    last = 0.0
    deadline = time.monotonic() + 3600
    for line in proc.stderr:
        err.append(line)
        if '"progress"' in line and time.monotonic() - last >= 2.0:
            last = time.monotonic()
            body = {"metadata": {"annotations": {PROGRESS: line.strip()[:1000]}}}
            try:
                core.patch_namespaced_pod(pod.metadata.name, pod.metadata.namespace, body)
            except client.ApiException as e:
                log.warning("progress of %s: %s", pod.metadata.name, e.reason)
        if time.monotonic() > deadline:
            proc.kill()
    code = proc.wait()
    reader.join(timeout=10)
    return code, "".join(out), "".join(err)


def run_pod(core: client.CoreV1Api, pod) -> None:
    name, ns = pod.metadata.name, pod.metadata.namespace
    with tempfile.TemporaryDirectory(prefix="kms-job-") as tmp:
        try:
            argv, term, env = local_argv(core, pod, Path(tmp))
            log.info("running pod %s/%s: %s", ns, name, " ".join(argv[:3]))
            code, stdout, stderr = run_streaming(core, pod, argv, env)
            message = term.read_text() if term.exists() else ""
            if not message and code != 0:  # terminationMessagePolicy FallbackToLogsOnError
                message = (stderr or stdout)[-3000:]
            sys.stderr.write(stderr[-4000:])
        except Exception as e:  # the pod fails with the reason, the runner keeps going
            code, message = 127, f"local runner: {type(e).__name__}: {e}"
    body = {"metadata": {"annotations": {EXIT: str(code), MESSAGE: message[:4096]}}}
    try:
        core.patch_namespaced_pod(name, ns, body)
        log.info("pod %s/%s finished with exit code %s", ns, name, code)
    except client.ApiException as e:
        if e.status != 404:
            raise


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="[local-runner %(asctime)s] %(message)s", datefmt="%H:%M:%S"
    )
    api = config.new_client_from_config(config_file=a.kubeconfig)
    core = client.CoreV1Api(api)
    started: set[str] = set()
    lock = threading.Lock()
    pool = ThreadPoolExecutor(max_workers=a.workers)

    def consider(pod) -> None:
        ann = pod.metadata.annotations or {}
        if (
            RUNNER not in ann
            or EXIT in ann
            or pod.status.phase != "Running"
            or pod.metadata.deletion_timestamp
        ):
            return
        with lock:
            if pod.metadata.uid in started:
                return
            started.add(pod.metadata.uid)
        pool.submit(run_pod, core, pod)

    log.info("watching job pods")
    while True:  # the watch is re-established whenever the server closes it
        try:
            for event in watch.Watch().stream(
                core.list_pod_for_all_namespaces, timeout_seconds=60, _request_timeout=90
            ):
                consider(event["object"])
        except Exception as e:
            log.warning("watch interrupted (%s); reconnecting", e)
            time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
