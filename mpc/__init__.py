"""MPC feature-share nodes, in three layers (each imports only the ones before it):

* :mod:`mpc.engine` — the computation: :mod:`~mpc.engine.ring` (fixed point in Z_2^64, sharing,
  truncation), :mod:`~mpc.engine.matmul` (exact ring products on float BLAS),
  :mod:`~mpc.engine.beaver` (triple providers, the dealer's math), :mod:`~mpc.engine.protocol`
  (secure operations, random mask recovery, inference), :mod:`~mpc.engine.transport` (in-process
  and TCP), :mod:`~mpc.engine.channel` (authenticated encrypted links),
  :mod:`~mpc.engine.recognition` (similarity on shares);
* :mod:`mpc.node` — the processes: :mod:`~mpc.node.node` (the node, the cluster layout),
  :mod:`~mpc.node.dealer` (the dealer service), :mod:`~mpc.node.store` (a node's SQLite),
  :mod:`~mpc.node.signing` (EIP-712 for FeatureShareRegistry); ``python -m mpc.node``;
* :mod:`mpc.client` — the orchestrator's side: :mod:`~mpc.client.terminal`,
  :mod:`~mpc.client.owner` (the model, ONNX lowering), :mod:`~mpc.client.cluster` (up/down, the
  client), :mod:`~mpc.client.audit` (on-chain history).

N parties in one process: ``tests/support/mpc_local.py``. See README.md.
"""
