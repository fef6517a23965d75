"""Helpers shared by the tests (chains, contracts, enclaves, models, MPC harness)."""
