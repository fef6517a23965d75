"""An auditor with only an RPC URL and the registry's address (or the operator's record): the
deployment is found on-chain, every contract's code is compared with the build artifacts, and
what should have ended but did not is a finding."""

from __future__ import annotations

import json

import pytest

from orchestrator.audit import Auditor
from orchestrator.cli import main as cli_main
from splitseal.chain import discover_deployment, load_deployment
from tests.support.contract_kit import Kit

pytestmark = pytest.mark.integration


def test_the_registry_address_alone_finds_the_deployment_and_its_code_verifies(anvil_chain, anvil_deployment):
    found = discover_deployment(anvil_chain, anvil_deployment.model_registry.address)
    assert found.backbone_execution.address == anvil_deployment.backbone_execution.address
    assert found.enclave_transfer.address == anvil_deployment.enclave_transfer.address
    checks = Auditor(anvil_chain, found).contract_checks()
    assert checks and all(c.ok for c in checks), checks


def test_a_record_pointing_a_contract_elsewhere_fails_loudly(anvil_chain, anvil_deployment, tmp_path):
    record = {"chainId": anvil_chain.chain_id, "block": anvil_deployment.block, "admin": anvil_deployment.admin,
              "contracts": {name: c.address for name, c in anvil_deployment.contracts().items()}}
    # the operator's record says BackboneExecution lives where EnclaveTransfer does
    record["contracts"]["BackboneExecution"] = anvil_deployment.enclave_transfer.address
    path = tmp_path / "record.json"
    path.write_text(json.dumps(record))
    forged = load_deployment(anvil_chain, tmp_path / "home", path=path)
    bad = [c for c in Auditor(anvil_chain, forged).contract_checks() if not c.ok]
    assert [c.name for c in bad] == ["BackboneExecution code is the build artifact's"], bad
    assert "differs" in bad[0].detail or "bytes of code" in bad[0].detail


def test_an_overdue_request_is_a_finding_and_the_cli_audits_from_a_fresh_home(anvil_chain, anvil_deployment,
                                                                               tmp_path, capsys):
    kit = Kit(anvil_chain, anvil_deployment)
    model_id, version = kit.register_model()
    kit.serving_enclave(model_id, version)
    req = kit.request(model_id, version, ttl=5)
    def deadline_check(audit):
        (check,) = [c for c in audit.checks if c.name == "open only until its deadline"]
        return check

    audit = Auditor(anvil_chain, anvil_deployment).request(req.request_id)
    assert audit.status == "REQUESTED" and deadline_check(audit).ok  # open, within its deadline
    anvil_chain.increase_time(30)
    audit = Auditor(anvil_chain, anvil_deployment).request(req.request_id)
    assert not audit.verified and not deadline_check(audit).ok and "overdue" in deadline_check(audit).detail
    # a fresh machine: no deployment record in this home, only the URL and the registry
    code = cli_main(["--config", str(_config(tmp_path)), "audit", "request", str(req.request_id),
                     "--chain", anvil_chain.url, "--registry", anvil_deployment.model_registry.address, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["status"] == "REQUESTED"
    assert any(c["name"] == "open only until its deadline" and not c["ok"] for c in out["checks"])


def _config(tmp_path):
    path = tmp_path / "splitseal.toml"
    path.write_text(f'home = "{tmp_path / "home"}"\n')
    return path
