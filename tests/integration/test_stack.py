"""The composition root (orchestrator/stack.py) as the demo and the benchmarks use it: a whole
system on the embedded chain, one request served end to end, everything stopped cleanly."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.stack import start_stack
from orchestrator.training import load_split
from splitseal.config import Config
from splitseal.protocol import RequestStatus

pytestmark = pytest.mark.integration


def test_a_stack_serves_a_request_and_stops(tmp_path):
    lines: list[str] = []
    stack = start_stack(Config(home=str(tmp_path)), chain_target="embedded", state_dir=tmp_path / "state",
                        say=lines.append)
    try:
        assert any("start the inference node" in line for line in lines)
        _, _, x_test, y_test = load_split()
        requester = stack.requester()
        outcome = requester.infer(stack.model_id, stack.version, x_test[0], timeout=60)
        requester.close()
        assert outcome.status is RequestStatus.COMPLETED
        assert isinstance(outcome.label, int) and 0 <= outcome.label <= 9
        assert np.isclose(sum(outcome.scores), 1.0, atol=1e-4)
    finally:
        stack.close()
    assert not stack.nodes and stack.enclave_proc.proc.poll() is not None
