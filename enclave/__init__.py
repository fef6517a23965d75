"""The sealed enclave stand-in: the trusted computing base of splitseal.

A separate OS process (``python -m enclave``) with a fixed list of entry calls that take and
return only ciphertexts, hashes, public keys and signatures. It imports nothing from web3,
eth-tester, chain_node or orchestrator (``tests/unit/test_enclave_guard.py`` checks it); the
platform-specific parts (root secret, quoting) sit behind :class:`enclave.platform.Platform`.
"""
