"""MPC feature-share nodes: ring arithmetic, Beaver triples, transports, the protocol, the node.

Modules: :mod:`.ring` (fixed point in Z_2^64, sharing, truncation), :mod:`.matmul` (exact ring
products on float BLAS), :mod:`.beaver` (triple providers, the dealer), :mod:`.transport`
(in-process and TCP), :mod:`.channel` (authenticated encrypted links), :mod:`.protocol` (secure
operations, random mask recovery, inference), :mod:`.recognition` (similarity on shares),
:mod:`.store` (a node's SQLite), :mod:`.node` (node and dealer services), :mod:`.signing`
(EIP-712 for FeatureShareRegistry), :mod:`.local` (N parties in one process). See README.md.
"""
