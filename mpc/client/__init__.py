"""Orchestrator side of the MPC feature-share nodes: terminal, owner, cluster, audit.

May import :mod:`mpc.engine` and :mod:`mpc.node`; never ``orchestrator``.
"""
