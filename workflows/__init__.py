"""Deterministic workflow code only: no I/O, no clocks, no randomness outside `workflow.*`."""

from workflows.agent import AgentWorkflow
from workflows.agent_control import KillWorkflow, StartWorkflow
from workflows.apply_commit import ApplyCommitWorkflow
from workflows.auto_update import AutoUpdateWorkflow
from workflows.health_check import HealthCheckWorkflow
from workflows.spawn import SpawnWorkflow

ALL_WORKFLOWS: list[type] = [
    AgentWorkflow,
    ApplyCommitWorkflow,
    AutoUpdateWorkflow,
    HealthCheckWorkflow,
    KillWorkflow,
    SpawnWorkflow,
    StartWorkflow,
]
