"""The Python API: what a program needs to send requests and audit them, in one place.

    import splitseal

    chain = splitseal.connect("http://127.0.0.1:8545")            # or "embedded", "anvil"
    deployment = splitseal.discover_deployment(chain, "0xREGISTRY")  # or load_deployment(chain, home)
    requester = splitseal.Requester(chain, deployment, chain.account(3),
                                    key=splitseal.X25519KeyPair.generate(), blob_dir="var/blobs")
    outcome = requester.infer(model_id, version, image)          # decrypted here, checked here
    audit = splitseal.Auditor(chain, deployment).request(outcome.request_id)
    assert audit.verified, [c for c in audit.checks if not c.ok]

This module is a façade over the whole system (the chain client below, the requester and the
auditor above); ``splitseal/__init__.py`` loads it on first use of one of its names, so the
shared core that the enclave imports stays free of it, and nothing inside the project imports it.
"""

from __future__ import annotations

from orchestrator.audit import Auditor, render_html, render_model, render_request
from orchestrator.requester import InferenceOutcome, Requester
from splitseal.chain import Chain, Deployment, connect, discover_deployment, load_deployment
from splitseal.protocol.crypto import X25519KeyPair

__all__ = ["Auditor", "Chain", "Deployment", "InferenceOutcome", "Requester", "X25519KeyPair", "connect",
           "discover_deployment", "load_deployment", "render_html", "render_model", "render_request"]
