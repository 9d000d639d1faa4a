"""The composition root: makes the shared State and wires the reconcilers and their queues.

    DatasetWatch ─► Datasets ──┐            (dataset status, servedBy)
    handlers (Kopf) ─► Services ──┼─► State   (API client, settings, snapshots, locks)
                       TileCaches ┤
                       MapJobs  ──┘
Datasets queue service reconciles; Services re-check the datasets' servedBy (Served)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from .dataset_watch import DatasetWatch
from .datasets import Datasets
from .kube import Kube
from .mapjobs import MapJobs
from .served import Served
from .services import Services
from .settings import Settings
from .state import State
from .tilecache_reconcile import TileCaches


@dataclass
class Operator:
    """The running operator: one per process, kept in Kopf's memo (handlers.py)."""

    kube: Kube
    settings: Settings
    namespaces: list[str] = field(default_factory=list)  # watched namespaces (none: all)
    background: list[asyncio.Task] = field(default_factory=list)  # housekeeping tasks

    def __post_init__(self) -> None:
        self.state = State(self.kube, self.settings)
        self.served = Served(self.state)
        self.services = Services(self.state, self.served, TileCaches(self.state))
        self.datasets = Datasets(
            self.state, self.served, self.services.queue.request, self.services.reconcile
        )
        self.mapjobs = MapJobs(self.state)
        self.dataset_watch = DatasetWatch(self.state, self.datasets, self.namespaces)

    def start(self) -> None:
        """Start listing and watching datasets and services (handlers wait for state.synced)."""
        self.background.append(asyncio.get_running_loop().create_task(self.dataset_watch.run()))
