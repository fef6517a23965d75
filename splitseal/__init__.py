"""Shared core of splitseal: the error hierarchy and the typed configuration.

Kept free of chain libraries so that the enclave can import it.
"""
