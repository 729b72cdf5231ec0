"""What a trusted reverse proxy may tell about a request, and what a client may not claim."""

from __future__ import annotations

from qa.proxies import client_address, forwarded_https, trusted_networks


def test_client_address_reads_forwarded_for_from_the_right() -> None:
    proxies = trusted_networks("10.0.0.0/8, 127.0.0.1")
    assert client_address("127.0.0.1", ["1.2.3.4"], []) == "127.0.0.1"
    assert client_address("192.0.2.1", ["1.2.3.4"], proxies) == "192.0.2.1"
    assert client_address("127.0.0.1", ["1.2.3.4"], proxies) == "1.2.3.4"
    assert client_address("127.0.0.1", ["6.6.6.6, 1.2.3.4, 10.1.1.1"], proxies) == "1.2.3.4"
    assert client_address("127.0.0.1", ["6.6.6.6", "1.2.3.4"], proxies) == "1.2.3.4"
    assert client_address("127.0.0.1", ["not-an-address"], proxies) == "127.0.0.1"
    assert client_address("127.0.0.1", [], proxies) == "127.0.0.1"


def test_https_is_believed_from_the_connection_or_a_trusted_proxy_only() -> None:
    proxies = trusted_networks("10.0.0.0/8")
    assert forwarded_https("https", "192.0.2.1", "", [])
    assert not forwarded_https("http", "192.0.2.1", "https", [])  # no proxy is trusted
    assert not forwarded_https("http", "192.0.2.1", "https", proxies)  # not from the proxy
    assert forwarded_https("http", "10.1.2.3", "https", proxies)
    assert forwarded_https("http", "10.1.2.3", "http, HTTPS", proxies)  # the last hop counts
    assert not forwarded_https("http", "10.1.2.3", "https, http", proxies)
    assert not forwarded_https("http", "10.1.2.3", "", proxies)
