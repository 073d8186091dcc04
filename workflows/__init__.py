"""Deterministic workflow code only: no I/O, no clocks, no randomness outside `workflow.*`.

The list of workflow types is `workflows.registry.ALL_WORKFLOWS`.
"""
