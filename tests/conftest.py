"""Shared fixtures: chains and deployments with per-test isolation by snapshots.

- ``chain`` / ``deployment``: the embedded chain (eth-tester, py-evm) with the five contracts
  deployed once per session; every test runs inside a snapshot that is reverted afterwards.
- ``anvil_chain`` / ``anvil_deployment``: the same on a real anvil node started for the session
  (tests using them are marked ``integration``).
- ``any_deployment``: parametrized over both chains.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Iterator

import pytest

if TYPE_CHECKING:  # chain libraries load only for tests that use a chain
    from splitseal.chain import Chain, Deployment


@pytest.fixture(scope="session")
def embedded_chain() -> Iterator["Chain"]:
    from splitseal.chain import connect

    chain = connect("embedded")
    yield chain
    chain.close()


@pytest.fixture(scope="session")
def embedded_deployment(embedded_chain: "Chain") -> "Deployment":
    from orchestrator.deploy import deploy_all

    return deploy_all(embedded_chain, embedded_chain.accounts[0])


@pytest.fixture
def chain(embedded_chain: "Chain", embedded_deployment: "Deployment") -> Iterator["Chain"]:
    snapshot = embedded_chain.snapshot()
    yield embedded_chain
    embedded_chain.revert(snapshot)


@pytest.fixture
def deployment(chain: "Chain", embedded_deployment: "Deployment") -> "Deployment":
    return embedded_deployment


@pytest.fixture(scope="session")
def anvil_session() -> Iterator["Chain"]:
    from splitseal.chain import AnvilNode, connect

    node = AnvilNode.start()
    chain = connect(node.http_url)
    chain.name = "anvil"
    yield chain
    chain.close()
    node.stop()


@pytest.fixture(scope="session")
def anvil_session_deployment(anvil_session: "Chain") -> "Deployment":
    from orchestrator.deploy import deploy_all

    return deploy_all(anvil_session, anvil_session.accounts[0])


@pytest.fixture
def anvil_chain(anvil_session: "Chain", anvil_session_deployment: "Deployment") -> Iterator["Chain"]:
    snapshot = anvil_session.snapshot()
    yield anvil_session
    anvil_session.revert(snapshot)
    # anvil's evm_revert also rewinds its clock; left alone, the chain falls behind the wall clock
    # over a session, and quotes stamped with wall-clock time look like they come from the future.
    latest = int(anvil_session.get_block("latest")["timestamp"])
    anvil_session.set_next_block_timestamp(max(latest + 1, int(time.time())))


@pytest.fixture
def anvil_deployment(anvil_chain: "Chain", anvil_session_deployment: "Deployment") -> "Deployment":
    return anvil_session_deployment


@pytest.fixture(params=["embedded", pytest.param("anvil", marks=pytest.mark.integration)])
def any_chain(request: pytest.FixtureRequest) -> "Chain":
    """The embedded chain, then anvil: for tests that must pass on both."""
    return request.getfixturevalue("chain" if request.param == "embedded" else "anvil_chain")


@pytest.fixture
def any_deployment(any_chain: "Chain", request: pytest.FixtureRequest) -> "Deployment":
    name = "deployment" if any_chain.url is None else "anvil_deployment"
    return request.getfixturevalue(name)
