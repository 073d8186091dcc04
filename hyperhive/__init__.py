"""hyperhive: a swarm of Claude Code agents, brokered, approval-gated, durable on Temporal."""

__version__ = "0.1.0"
