"""Orchestrator side of the MPC feature-share nodes: terminal, model owner, cluster, audit."""
