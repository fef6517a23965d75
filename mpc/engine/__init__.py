"""The MPC engine: ring, matmul, beaver, protocol, transport, channel, recognition.

Touches no chain, no files, no processes; imports neither :mod:`mpc.node` nor :mod:`mpc.client`.
"""
