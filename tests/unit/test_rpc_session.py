"""The RPC chain's HTTP session reads the environment's proxy settings once, as requests would
on each request: the same proxies, no per-request environment lookups."""

from __future__ import annotations

import threading

from splitseal.chain.rpc import EnvironmentOnce


def test_the_environments_proxy_is_taken_once_and_per_thread_sessions_do_not_look_again(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    session = EnvironmentOnce("https://rpc.example.org")._session()
    assert session.trust_env is False
    assert session.proxies.get("https") == "http://proxy.example:3128"


def test_no_proxy_for_the_local_node_and_one_session_per_thread(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    once = EnvironmentOnce("http://127.0.0.1:8545")
    here = once._session()
    assert "http" not in here.proxies and once._session() is here
    other = []
    thread = threading.Thread(target=lambda: other.append(once._session()))
    thread.start()
    thread.join()
    assert other[0] is not here  # requests.Session is not shared across threads
