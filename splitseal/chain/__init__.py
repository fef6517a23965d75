"""The chain client: one interface over the embedded chain, anvil and any JSON-RPC URL."""
