"""What lower layers need from higher ones, as protocols: the composition root hands in the
implementation, so activities never import the API that serves an agent, nor the Temporal
clients that drive its turn loop."""

from __future__ import annotations

from typing import Protocol


class AgentServing(Protocol):
    """Brings up what a registered agent needs on this host (directories, MCP socket, model
    proxy, page). Idempotent: called again for an agent already served, it does nothing."""

    async def ensure(self, agent: str) -> None: ...


class AgentLoops(Protocol):
    """An agent's durable turn loop (its AgentWorkflow), as the lifecycle activities drive it."""

    async def __call__(self, agent: str) -> None:
        """Wake the loop (starting it when it is not running): the broker's Waker too."""
        ...

    async def stop(self, agent: str) -> None:
        """Stop the loop and return once it has ended; at once when it is not running."""
        ...
