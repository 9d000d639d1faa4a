"""Plot reconcile time vs number of datasets from results.json (run in .kms/bench-venv)."""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

with open(sys.argv[1]) as f:
    results = json.load(f)
bulk = results["operator"]["bulk"]
n = [b["n"] for b in bulk]
fig, ax = plt.subplots(figsize=(6, 4))
ax.plot(n, [b["all_ready_s"] for b in bulk], "o-", label="all datasets Ready")
ax.plot(n, [b["all_served_s"] for b in bulk], "s-", label="mapfile holds all layers")
ax.axhline(60, color="grey", linestyle="--", label="target at 1,000 (60 s)")
ax.set_xlabel("MapDatasets applied at once (one MapService)")
ax.set_ylabel("seconds")
ax.set_title(f"kube-mapserver operator, {results['when']}")
ax.legend()
ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=100)
print(f"wrote {sys.argv[2]}")
