"""Every workflow type hive-c0re's worker runs.

Kept out of `workflows/__init__.py`: Temporal's sandbox re-imports a workflow's module for each
new run, and a package `__init__` that imported all of them made every run import all of them.
"""

from workflows.agent import AgentWorkflow
from workflows.agent_control import KillWorkflow, StartWorkflow
from workflows.apply_commit import ApplyCommitWorkflow
from workflows.auto_update import AgentUpdateWorkflow, AutoUpdateWorkflow
from workflows.health_check import HealthCheckWorkflow
from workflows.spawn import SpawnWorkflow

ALL_WORKFLOWS: list[type] = [
    AgentUpdateWorkflow,
    AgentWorkflow,
    ApplyCommitWorkflow,
    AutoUpdateWorkflow,
    HealthCheckWorkflow,
    KillWorkflow,
    SpawnWorkflow,
    StartWorkflow,
]
