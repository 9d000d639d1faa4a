"""What every pod the operator makes (MapServer, MapCache) has: a restrictive securityContext and
a termination that drops no request."""

WWW_DATA_UID = 33  # the upstream image's www-data user: Apache listens on 8080 when not root

# A pod being replaced keeps serving while the endpoints controller, kube-proxy and ingresses drop it
# from its Service (preStop sleep); then the runtime sends the image's STOPSIGNAL (SIGWINCH, Apache's
# graceful stop: it stops accepting and answers the requests under way) within the grace period.
DRAIN_SECONDS = 5
LIFECYCLE = {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}}
TERMINATION_GRACE_SECONDS = DRAIN_SECONDS + 60

CONTAINER_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": WWW_DATA_UID,
    "runAsGroup": WWW_DATA_UID,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
