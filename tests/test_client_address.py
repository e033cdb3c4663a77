import pytest

from mediaserver.cli import load_config
from mediaserver.client_address import address_key, client_ip, parse_trusted_proxies

PROXIES = parse_trusted_proxies("10.0.0.0/8, fd00::/8,192.0.2.1")


def test_no_trusted_proxy_means_the_header_is_ignored():
    assert client_ip("203.0.113.7", "198.51.100.1", ()) == "203.0.113.7"


def test_a_header_from_an_untrusted_peer_is_ignored():
    # anyone can write X-Forwarded-For: only a trusted proxy's counts
    assert client_ip("203.0.113.7", "198.51.100.1", PROXIES) == "203.0.113.7"


def test_the_client_is_the_first_untrusted_hop_from_the_right():
    # a client may put anything left of its own address; the proxies append on the right
    header = "1.2.3.4, 198.51.100.9, 10.1.1.1"
    assert client_ip("10.0.0.5", header, PROXIES) == "198.51.100.9"
    assert client_ip("192.0.2.1", "198.51.100.9", PROXIES) == "198.51.100.9"


def test_a_garbled_hop_stops_the_walk_at_the_last_good_address():
    assert client_ip("10.0.0.5", "198.51.100.9, not-an-ip", PROXIES) == "10.0.0.5"
    assert client_ip("10.0.0.5", "garbage, 10.2.2.2", PROXIES) == "10.2.2.2"


def test_forms_of_an_address():
    assert client_ip("::ffff:203.0.113.7", None, ()) == "203.0.113.7"
    assert client_ip("10.0.0.5", "[2001:db8::1]:443", PROXIES) == "2001:db8::1"
    assert client_ip("10.0.0.5", "198.51.100.9:5000", PROXIES) == "198.51.100.9"
    assert client_ip(None, "198.51.100.9", PROXIES) == ""
    assert client_ip("unix-socket", None, PROXIES) == ""


def test_ipv6_is_keyed_on_its_64_and_ipv4_on_the_address():
    assert address_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:2:ffff:1:2:3") == address_key("2001:db8:1:2::9")
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("203.0.113.7") == "203.0.113.7"
    assert address_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert address_key("unknown") == "unknown"


def test_a_bad_trusted_proxy_flag_stops_start_up_with_one_line(tmp_path):
    args = ["--db", str(tmp_path / "db"), "--data-key-file", str(tmp_path / "key")]
    with pytest.raises(ValueError, match=r"--trusted-proxy: 'nope' is not an IP address"):
        load_config([*args, "--trusted-proxy", "10.0.0.0/8,nope"], environ={})
    config = load_config(args, environ={"MEDIASERVER_TRUSTED_PROXY": "::1,127.0.0.1/32"})
    assert len(parse_trusted_proxies(config.trusted_proxy)) == 2


def test_transition_addresses_are_keyed_on_the_ipv4_client_they_carry():
    # 6to4: a whole /48 per IPv4 address; every /64 of it is the one client
    assert address_key("2002:c000:207:1::1") == "192.0.2.7"
    assert address_key("2002:c000:207:ffff:1::9") == address_key("192.0.2.7")
    # Teredo: the /64 is the relay's (shared by all its clients); the client is the
    # (de-obfuscated) IPv4 address in the low bits, RFC 4380 section 4
    assert address_key("2001:0:4136:e378:8000:63bf:3fff:fdd2") == "192.0.2.45"
    assert address_key("2001:0:4136:e378:8000:63bf:3fff:fdd1") == "192.0.2.46"
    # a zone says which interface, not who: dropped
    assert address_key("fe80::1%eth0") == address_key("fe80::2") == "fe80::/64"
    # whatever form the address arrives in, through a trusted proxy
    assert address_key(client_ip("10.0.0.5", "[2001:db8:1:2::77]:443", PROXIES)) == "2001:db8:1:2::/64"
