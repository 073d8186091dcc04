"""Which agents sit on a host that is down: decided here once, for the dashboard, the admin
socket and `hive status` alike (control/operator.py calls it over `list_hosts`' answer).

An agent runs its turns and its container only on its own host (agents.host_id): while that host
is down its stored state ("idle", "running", …) is only what it was when the host was last heard
of, so the operator is shown `host <id> down` instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from hyperhive.store.hosts import HostInfo

__all__ = ["HostHealth", "down_hosts", "host_down_state", "host_health"]


class HostHealth(HostInfo):
    """A host as `hive status` and the dashboard show it."""

    # The host of the hive-c0re answering.
    here: bool
    # Seconds since its last beat, by the answering host's clock; None: it never beat.
    heartbeat_age_s: float | None


def host_health(hosts: Iterable[HostInfo], *, here: str, now: datetime) -> list[HostHealth]:
    """`hosts` (from `list_hosts`) with which one is `here` and how old each one's beat is."""
    return [
        HostHealth(
            **host.model_dump(),
            here=host.id == here,
            heartbeat_age_s=(
                None
                if host.heartbeat_at is None
                else round((now - host.heartbeat_at).total_seconds(), 1)
            ),
        )
        for host in hosts
    ]


def down_hosts(hosts: Iterable[HostInfo], *, here: str) -> frozenset[str]:
    """The ids of the hosts whose agents cannot run now: every host the store has as down,
    except `here`, the host asking, which is up since it is asking (its own heartbeat may be
    late only because the store was slow). A host not in `hosts` (an agent registered after
    they were read) is not taken for down: nothing says it is."""
    return frozenset(host.id for host in hosts if not host.up and host.id != here)


def host_down_state(host_id: str) -> str:
    """What an agent on a down host shows instead of its state."""
    return f"host {host_id} down"
