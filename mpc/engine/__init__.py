"""The MPC engine: ring arithmetic, products, triples, transports, channels, the protocol. Touches no chain."""
