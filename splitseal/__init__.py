"""splitseal: confidential, auditable ML inference orchestrated by smart contracts.

The package is the shared core (errors, config, protocol formats, the chain client) that every
part imports, the enclave included, and it is also the Python API: ``splitseal.connect``,
``splitseal.Requester``, ``splitseal.Auditor`` and the rest of :mod:`splitseal.api`, loaded on
first use so that importing the core loads nothing else.
"""

from __future__ import annotations

from typing import Any

_API = ("Auditor", "Chain", "Deployment", "InferenceOutcome", "Requester", "X25519KeyPair", "connect",
        "discover_deployment", "load_deployment", "render_html", "render_model", "render_request")


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module("splitseal.api"), name)
    raise AttributeError(f"module 'splitseal' has no attribute {name!r}")
