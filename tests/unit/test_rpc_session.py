"""The RPC chain's HTTP session reads the environment's proxy settings once, as requests would
on each request: the same proxies, no per-request environment lookups."""

from __future__ import annotations

import threading

import pytest

from splitseal.chain.rpc import EnvironmentOnce


@pytest.fixture
def no_proxy(monkeypatch):
    """No HTTP proxy in the environment: a local node is posted to directly."""
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


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


class _JsonRpcEcho:
    """A local HTTP/1.1 server answering every POST with its body's id; counts connections and
    requests; ``close_after`` closes each connection after that many answers."""

    def __init__(self, close_after: int = 0, status: int = 200) -> None:
        import http.server

        echo = self
        self.connections, self.requests, self.close_after, self.status = 0, 0, close_after, status

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                echo.connections += 1
                self.answered = 0

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                import json

                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                echo.requests += 1
                self.answered += 1
                reply = json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": hex(echo.requests)}).encode()
                self.send_response(echo.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                if echo.close_after and self.answered >= echo.close_after:
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> "_JsonRpcEcho":
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _post(once: EnvironmentOnce, url: str, request_id: int) -> dict:
    import json

    with once.post(url, data=json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "eth_blockNumber",
                                         "params": []}).encode(),
                   headers={"Content-Type": "application/json"}, timeout=5) as reply:
        reply.raise_for_status()
        return json.loads(reply.content)


def test_a_local_node_is_posted_to_over_one_kept_alive_connection_per_thread(no_proxy):
    with _JsonRpcEcho() as server:
        once = EnvironmentOnce(server.url)
        assert once.direct
        assert [_post(once, server.url, i)["id"] for i in range(5)] == list(range(5))
        assert server.connections == 1 and server.requests == 5
        other = threading.Thread(target=lambda: _post(once, server.url, 9))
        other.start()
        other.join()
        assert server.connections == 2  # http.client connections are not shared across threads


def test_a_connection_the_node_closed_is_replaced_and_no_request_is_sent_twice(no_proxy):
    import time

    with _JsonRpcEcho(close_after=1) as server:
        once = EnvironmentOnce(server.url)
        for i in range(3):
            assert _post(once, server.url, i)["id"] == i
            time.sleep(0.05)  # the server's close reaches the client's socket
        assert server.requests == 3 and server.connections == 3


def test_an_http_error_status_raises_as_requests_would(no_proxy):
    import requests

    with _JsonRpcEcho(status=503) as server:
        with pytest.raises(requests.HTTPError, match="503"):
            _post(EnvironmentOnce(server.url), server.url, 1)


def test_a_proxied_or_https_endpoint_goes_through_requests(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert not EnvironmentOnce("http://node.example:8545").direct
    assert not EnvironmentOnce("https://rpc.example.org").direct
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert EnvironmentOnce("http://127.0.0.1:8545").direct


def test_the_chains_direct_requests_go_over_the_kept_alive_connection_with_their_own_ids(no_proxy):
    from web3 import HTTPProvider, Web3

    from splitseal.chain.rpc import RpcChain

    with _JsonRpcEcho() as server:
        once = EnvironmentOnce(server.url)
        chain = RpcChain(Web3(HTTPProvider(server.url, session=once)), server.url, name="echo", accounts=[],
                         session=once)
        before = server.requests  # the chain asked web3's provider for its chain id when made
        replies = [chain._rpc("eth_blockNumber", []) for _ in range(3)]
        assert [r["result"] for r in replies] == [hex(before + i) for i in (1, 2, 3)]
        assert len({r["id"] for r in replies}) == 3  # each request its own id, answered in kind
        assert server.connections == 1 and server.requests == before + 3  # web3's connection, kept alive


def test_the_chains_direct_request_raises_an_http_error_status_as_web3s_provider_does(no_proxy):
    import requests
    from web3 import HTTPProvider, Web3

    from splitseal.chain.rpc import RpcChain

    with _JsonRpcEcho() as server:
        once = EnvironmentOnce(server.url)
        chain = RpcChain(Web3(HTTPProvider(server.url, session=once)), server.url, name="echo", accounts=[],
                         session=once)
        server.status = 503  # from now on (the chain asked for its chain id when made)
        with pytest.raises(requests.HTTPError, match="503"):
            chain._rpc("eth_blockNumber", [])
        with pytest.raises(requests.HTTPError, match="503"):
            chain._w3.provider.make_request("eth_blockNumber", [])
