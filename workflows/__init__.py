"""Deterministic workflow code only: no I/O, no clocks, no randomness outside `workflow.*`."""

from workflows.agent import AgentWorkflow
from workflows.health_check import HealthCheckWorkflow

ALL_WORKFLOWS: list[type] = [AgentWorkflow, HealthCheckWorkflow]
