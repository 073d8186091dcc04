"""Temporal's clients on the host: start lifecycle workflows, wake turn loops, decide approvals,
and the operator's view over them. Above `workflows/` (it refers to workflows by their classes),
below `api/` and the composition root."""
