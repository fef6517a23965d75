// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Fixture} from "./utils/Fixture.sol";
import {Test} from "./utils/Test.sol";
import {IBackboneExecution} from "../src/interfaces/IBackboneExecution.sol";
import {IFeatureShareRegistry} from "../src/interfaces/IFeatureShareRegistry.sol";
import {RequestBinding} from "../src/lib/RequestBinding.sol";

/// @notice Drives the deployed stack at random (forge's invariant runner calls these functions
///         in random order with random arguments) and keeps ghost books of what happened, for
///         the invariants in {LifecycleInvariantTest}.
contract Handler is Fixture {
    // Enclave keys: A and B serve the model (B may get revoked); C is registered and allowed
    // but never loaded the head; D was never registered.
    uint256 internal constant PK_A = 0xA1;
    uint256 internal constant PK_B = 0xB2;
    uint256 internal constant PK_C = 0xC3;
    uint256 internal constant PK_D = 0xD4;
    uint256[4] internal pks = [PK_A, PK_B, PK_C, PK_D];
    bytes32[3] internal keys = [bytes32("key-0"), bytes32("key-1"), bytes32("key-2")];
    address[2] internal requesters = [address(0xCAFE), address(0xBEEF)];

    struct Ghost {
        address requester;
        bytes32 key;
        bytes32 commitment;
        uint256 enclavePk; // the enclave the backbone output was transferred to (0: none yet)
        bytes32 transferHash;
        uint8 ends; // terminal transitions the handler saw succeed
        IBackboneExecution.Status endedAs;
    }

    uint256[] public ids;
    mapping(uint256 id => Ghost) public ghost;
    /// Completions that should have been refused (wrong signer, wrong key, enclave not serving).
    uint256 public illegitimateCompletions;
    /// Terminal transitions of a request that had already ended.
    uint256 public secondEnds;
    /// Successful calls per action (so a run that never completes anything is visible).
    mapping(IBackboneExecution.Status how => uint256) public ended;

    // MPC: one node set of three, one enrolled subject.
    uint256[3] internal nodePks = [uint256(0x11), 0x22, 0x33];
    uint256 public setId;
    bytes32 internal constant SUBJECT = bytes32("alice");
    bytes32[] public sessions;
    mapping(bytes32 session => bool accepted) public signedAccepted;
    uint256 public illegitimateDecisions;
    uint256 public decisionsRecorded;
    uint256 internal _sessionCounter;

    constructor() {
        deployStack();
        serve(PK_A);
        serve(PK_B);
        registerEnclave(PK_C, MEASUREMENT);
        address[] memory nodes = new address[](3);
        for (uint256 i = 0; i < 3; ++i) nodes[i] = vm.addr(nodePks[i]);
        vm.prank(admin);
        setId = features.createNodeSet(nodes);
        bytes32[] memory commitments = new bytes32[](3);
        bytes[] memory sigs = new bytes[](3);
        for (uint256 i = 0; i < 3; ++i) {
            commitments[i] = keccak256(abi.encode("share", i));
            sigs[i] = signDigest(nodePks[i], typedDigest(featuresDomain, keccak256(
                abi.encode(SHARE_COMMITMENT_TYPEHASH, setId, SUBJECT, uint32(1), commitments[i]))));
        }
        features.enrollSubject(setId, SUBJECT, commitments, sigs);
    }

    function deployed() external view returns (IBackboneExecution, IFeatureShareRegistry) {
        return (backbone, features);
    }

    function idCount() external view returns (uint256) {
        return ids.length;
    }

    function sessionCount() external view returns (uint256) {
        return sessions.length;
    }

    // ------------------------------------------------------------------------------- actions

    function request(uint256 who, uint256 key, uint32 ttl) external {
        ttl = uint32(bound(ttl, 1, 6 hours));
        address r = requesters[who % 2];
        bytes32 k = keys[key % 3];
        bytes32 commitment = keccak256(abi.encode("input", ids.length));
        uint256 id = requestAs(r, commitment, k, ttl);
        ids.push(id);
        Ghost storage g = ghost[id];
        (g.requester, g.key, g.commitment) = (r, k, commitment);
    }

    function recordOutput(uint256 idSeed, uint256 enclaveSeed) external {
        if (ids.length == 0) return;
        uint256 id = ids[idSeed % ids.length];
        uint256 pk = pks[enclaveSeed % 4];
        bytes32 transferHash = keccak256(abi.encode("transfer", id, pk));
        vm.prank(node);
        try backbone.recordBackboneOutput(id, bytes32("out"), vm.addr(pk), transferHash) {
            (ghost[id].enclavePk, ghost[id].transferHash) = (pk, transferHash);
        } catch {}
    }

    /// Submits a result for a transferred request, signed by a key from the pool, for a
    /// requester key from the pool (each possibly not the right one).
    function submit(uint256 idSeed, uint256 signerSeed, uint256 keySeed, bool claimSigner) external {
        if (ids.length == 0) return;
        uint256 id = ids[idSeed % ids.length];
        Ghost storage g = ghost[id];
        if (g.enclavePk == 0) return;
        uint256 signer = pks[signerSeed % 4];
        // the claim names the transfer's enclave, or (claimSigner) the signer itself
        address named = claimSigner ? vm.addr(signer) : vm.addr(g.enclavePk);
        RequestBinding.ResultClaim memory c =
            claimFor(id, g.requester, g.commitment, keys[keySeed % 3], named, g.transferHash);
        bytes memory result = abi.encode("result", id);
        bytes memory sig = signResult(signer, c, result);
        bool legit = _legitimate(id, signer, c);
        try transfer.submitResult(c, result, "", bytes32(0), sig) {
            _ended(id, IBackboneExecution.Status.Completed);
            if (!legit) ++illegitimateCompletions;
        } catch {}
    }

    /// The node's one-transaction path: backbone output, transfer and result together.
    function deliver(uint256 idSeed, uint256 enclaveSeed, uint256 signerSeed, uint256 keySeed) external {
        if (ids.length == 0) return;
        uint256 id = ids[idSeed % ids.length];
        Ghost storage g = ghost[id];
        uint256 pk = pks[enclaveSeed % 4];
        uint256 signer = signerSeed % 3 == 0 ? pks[signerSeed % 4] : pk; // mostly the right signer
        bytes32 transferHash = keccak256(abi.encode("transfer", id, pk));
        RequestBinding.ResultClaim memory c =
            claimFor(id, g.requester, g.commitment, keySeed % 2 == 0 ? g.key : keys[keySeed % 3], vm.addr(pk), transferHash);
        bytes memory result = abi.encode("result", id);
        bytes memory sig = signResult(signer, c, result);
        bool wasRequested = backbone.status(id) == IBackboneExecution.Status.Requested;
        (uint256 oldPk, bytes32 oldHash) = (g.enclavePk, g.transferHash);
        (g.enclavePk, g.transferHash) = (pk, transferHash); // what the binding will hold if it succeeds
        bool legit = wasRequested && _legitimate(id, signer, c);
        vm.prank(node);
        try backbone.deliverResult(c, bytes32("out"), result, "", bytes32(0), sig) {
            _ended(id, IBackboneExecution.Status.Completed);
            if (!legit) ++illegitimateCompletions;
        } catch {
            (g.enclavePk, g.transferHash) = (oldPk, oldHash);
        }
    }

    function reportFailure(uint256 idSeed, uint8 code) external {
        if (ids.length == 0) return;
        uint256 id = ids[idSeed % ids.length];
        vm.prank(node);
        try transfer.reportFailure(id, uint8(bound(code, 1, 7)), "handler") {
            _ended(id, IBackboneExecution.Status.Failed);
        } catch {}
    }

    function timeout(uint256 idSeed) external {
        if (ids.length == 0) return;
        uint256 id = ids[idSeed % ids.length];
        try backbone.timeout(id) {
            _ended(id, IBackboneExecution.Status.TimedOut);
        } catch {}
    }

    function warp(uint32 dt) external {
        vm.warp(block.timestamp + bound(dt, 0, 3 hours));
    }

    function renewA() external {
        registerEnclave(PK_A, MEASUREMENT); // a fresh quote: registration extended by a day
    }

    function revokeB() external {
        if (registry.enclaveRecord(vm.addr(PK_B)).revoked) return;
        vm.prank(admin);
        registry.revokeEnclave(vm.addr(PK_B));
    }

    function toggleMeasurement() external {
        bool allowed = registry.isMeasurementAllowed(MODEL, MEASUREMENT);
        vm.prank(owner);
        if (allowed) registry.revokeMeasurement(MODEL, MEASUREMENT);
        else registry.allowMeasurement(MODEL, MEASUREMENT);
    }

    /// Records an MPC decision with the node set's signatures, tampered with one way or another
    /// unless `tamper % 6 == 0`.
    function decide(bool accepted, uint8 tamper, uint8 which) external {
        bytes32 session = keccak256(abi.encode("session", ++_sessionCounter));
        bytes32 probe = keccak256(abi.encode("probe", session));
        uint256 t = tamper % 6;
        bytes[] memory sigs = _decisionSignatures(session, accepted, probe, t, which % 3);
        try features.recordDecision(setId, session, 1, SUBJECT, accepted, probe, sigs) {
            sessions.push(session);
            signedAccepted[session] = accepted;
            if (t != 0) ++illegitimateDecisions;
            ++decisionsRecorded;
        } catch {}
    }

    /// The three nodes' signatures of the (verify) decision, tampered with as `t` says: 0 none,
    /// 1 node i replaced by an outsider, 2 node i signed the opposite decision, 3 node i's
    /// malleable twin, 4 one signature missing, 5 two signatures out of order.
    function _decisionSignatures(bytes32 session, bool accepted, bytes32 probe, uint256 t, uint256 i)
        internal
        view
        returns (bytes[] memory sigs)
    {
        bytes32 digest = _decisionDigest(session, accepted, probe);
        sigs = new bytes[](t == 4 ? 2 : 3);
        for (uint256 j = 0; j < sigs.length; ++j) sigs[j] = signDigest(nodePks[j], digest);
        if (t == 1) sigs[i] = signDigest(0x99, digest);
        if (t == 2) sigs[i] = signDigest(nodePks[i], _decisionDigest(session, !accepted, probe));
        if (t == 3) sigs[i] = highSTwin(sigs[i]);
        if (t == 5) (sigs[i], sigs[(i + 1) % 3]) = (sigs[(i + 1) % 3], sigs[i]);
    }

    function _decisionDigest(bytes32 session, bool accepted, bytes32 probe) internal view returns (bytes32) {
        return typedDigest(featuresDomain, keccak256(
            abi.encode(DECISION_TYPEHASH, setId, session, uint8(1), SUBJECT, accepted, probe)));
    }

    // ------------------------------------------------------------------------------ helpers

    /// The claim may complete the request: the transfer's enclave signed it, for the request's
    /// own requester key, and the enclave serves the model now, before the deadline.
    function _legitimate(uint256 id, uint256 signer, RequestBinding.ResultClaim memory c) internal view returns (bool) {
        Ghost storage g = ghost[id];
        return signer == g.enclavePk && c.enclave == vm.addr(g.enclavePk) && c.requesterKey == g.key
            && registry.isEnclaveServing(MODEL, version, c.enclave)
            && block.timestamp <= backbone.request(id).deadline;
    }

    function _ended(uint256 id, IBackboneExecution.Status how) internal {
        Ghost storage g = ghost[id];
        if (g.ends != 0) ++secondEnds;
        ++ended[how];
        ++g.ends;
        g.endedAs = how;
    }
}

/// @notice Invariants of the request lifecycle and of MPC decisions, over random sequences of
///         the {Handler}'s actions.
contract LifecycleInvariantTest is Test {
    Handler internal handler;
    IBackboneExecution internal backbone;
    IFeatureShareRegistry internal features;

    function setUp() public {
        handler = new Handler();
        (backbone, features) = handler.deployed();
        targetContract(address(handler));
    }

    /// Each request ends exactly once: a terminal status (Completed, Failed, TimedOut) is reached
    /// by exactly one successful call, is the one that call made, and never changes afterwards;
    /// a request that has not ended is Requested or Transferred.
    /// The handler's own legitimate paths succeed (so the invariants are not vacuous): a
    /// delivered result, a two-step one, a failure, a timeout and a decision.
    function test_handler_reaches_every_outcome() public {
        for (uint256 i = 0; i < 4; ++i) handler.request(0, 0, 1 hours); // ids 1..4, requester 0, key 0
        handler.deliver(0, 0, 1, 0); // id 1 by enclave A, signed by A, for key 0
        handler.recordOutput(1, 1); // id 2 transferred to B
        handler.submit(1, 1, 0, false); // signed by B for key 0
        handler.reportFailure(2, 3);
        handler.warp(3 hours);
        handler.timeout(3);
        handler.decide(true, 0, 0);
        handler.decide(true, 1, 0); // an outsider's signature: refused
        vm.assertEq(handler.ended(IBackboneExecution.Status.Completed), 2, "completions");
        vm.assertEq(handler.ended(IBackboneExecution.Status.Failed), 1, "failures");
        vm.assertEq(handler.ended(IBackboneExecution.Status.TimedOut), 1, "timeouts");
        vm.assertEq(handler.decisionsRecorded(), 1, "decisions");
        invariant_each_request_ends_exactly_once();
        invariant_only_a_serving_enclave_for_the_right_key_completes();
        invariant_decisions_need_the_node_sets_signatures();
    }

    function invariant_each_request_ends_exactly_once() public view {
        vm.assertEq(handler.secondEnds(), 0, "a request ended twice");
        uint256 n = handler.idCount();
        for (uint256 i = 0; i < n; ++i) {
            uint256 id = handler.ids(i);
            (,,,,, uint8 ends, IBackboneExecution.Status endedAs) = handler.ghost(id);
            IBackboneExecution.Status s = backbone.status(id);
            if (ends == 0) {
                vm.assertTrue(s == IBackboneExecution.Status.Requested || s == IBackboneExecution.Status.Transferred,
                              "open request in a terminal status");
            } else {
                vm.assertEq(ends, 1, "ended more than once");
                vm.assertEq(uint8(s), uint8(endedAs), "terminal status changed");
            }
        }
    }

    /// Only a registered, unexpired, allowed, unrevoked enclave that loaded the head, signing
    /// for the request's own requester key, completes a request.
    function invariant_only_a_serving_enclave_for_the_right_key_completes() public view {
        vm.assertEq(handler.illegitimateCompletions(), 0, "a request completed without a legitimate result");
    }

    /// An MPC decision is recorded only with every node's signature of that very decision, in
    /// the set's order, and is recorded as signed.
    function invariant_decisions_need_the_node_sets_signatures() public view {
        vm.assertEq(handler.illegitimateDecisions(), 0, "a decision recorded without the node set's signatures");
        uint256 n = handler.sessionCount();
        for (uint256 i = 0; i < n; ++i) {
            bytes32 session = handler.sessions(i);
            IFeatureShareRegistry.DecisionRecord memory d = features.decision(session);
            vm.assertTrue(d.accepted == handler.signedAccepted(session), "decision differs from what was signed");
        }
    }
}
