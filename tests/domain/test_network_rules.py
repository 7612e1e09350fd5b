"""The pure half of the private-address rule (``domain.network_rules``): what a host, a git
remote or an image reference says as written, with no lookup. The resolving half and the callers'
answers are tested in tests/activities/test_isolation_checkout.py and tests/api/test_isolation_targets.py."""

from __future__ import annotations

import ipaddress

import pytest

from domain.network_rules import (
    HostCheck,
    internal_address,
    literal_address,
    local_name,
    numeric_address,
    parse_git_remote,
    resolved_host_check,
    static_image_problem,
    static_repository_problem,
    url_host_port,
    worded_refusal,
    written_host_check,
)

HINT = "DEVOPS_ALLOW_PRIVATE_TARGETS=true"


# ---- addresses -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),      # decimal
        ("017700000001", "127.0.0.1"),    # octal
        ("0x7f000001", "127.0.0.1"),      # hex
        ("0X7F.1", "127.0.0.1"),          # hex, two parts
        ("0177.0.0.1", "127.0.0.1"),      # an octal part in a dotted quad
        ("127.1", "127.0.0.1"),           # the last part fills the remaining bytes
        ("10.1.2", "10.1.0.2"),
        ("0", "0.0.0.0"),
        ("127.0.0.1.", "127.0.0.1"),      # trailing dot
        ("1572395042", "93.184.216.34"),
    ],
)
def test_numeric_hosts_are_read_as_the_resolver_reads_them(host, address):
    assert numeric_address(host) == ipaddress.IPv4Address(address)


@pytest.mark.parametrize("host", ["example.com", "08", "256.1", "1.16777216", "1.2.3.4.5", "1..2", "", "::1",
                                  "0x7f.example.com"])
def test_other_hosts_are_not_numeric(host):
    assert numeric_address(host) is None


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
     "224.0.0.1", "240.0.0.1", "255.255.255.255", "::", "::1", "fe80::1", "fc00::1", "ff02::1",
     "::ffff:127.0.0.1", "::ffff:10.0.0.1",  # IPv4-mapped
     "2002:7f00:1::",                         # 6to4 around 127.0.0.1
     "64:ff9b::7f00:1",                       # NAT64 around 127.0.0.1
     "::7f00:1"],                             # IPv4-compatible (reserved)
)
def test_internal_addresses(address):
    assert internal_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:2800::1", "64:ff9b::808:808"])
def test_global_addresses(address):
    assert not internal_address(ipaddress.ip_address(address))


def test_literal_addresses_in_brackets_and_with_a_zone():
    assert literal_address("[::1]") == ipaddress.ip_address("::1")
    assert literal_address(" [::] ") == ipaddress.ip_address("::")
    assert literal_address("fe80::1%eth0") is not None
    assert literal_address("example.com") is None
    assert literal_address("2130706433") is None  # numeric forms are numeric_address's


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "localhost.", "app.localhost", "localhost.localdomain",
                                  ""])
def test_names_of_this_machine(host):
    assert local_name(host)


def test_other_names_are_not_local():
    assert not local_name("localhost.example.com")
    assert not local_name("example.com")


# ---- hosts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "says"),
    [
        ("127.0.0.1", "host 127.0.0.1 is a loopback, private or link-local address"),
        ("[::]", "host :: is a loopback, private or link-local address"),
        ("::ffff:127.0.0.1", "host ::ffff:127.0.0.1 is a loopback"),
        ("2130706433", "host 2130706433 resolves to 127.0.0.1, a loopback"),
        ("0", "host 0 resolves to 0.0.0.0, a loopback"),
        ("0x7f.1", "host 0x7f.1 resolves to 127.0.0.1, a loopback"),
        ("127.0.0.1.", "host 127.0.0.1. resolves to 127.0.0.1, a loopback"),
        ("localhost.", "host 'localhost.' names this machine"),
        ("", "host '(empty)' names this machine"),
    ],
)
def test_written_internal_hosts_are_refused_without_a_lookup(host, says):
    check = written_host_check(host, what="the target's")
    assert check is not None and check.problem is not None
    assert check.problem.startswith("the target's host ")
    assert says in check.problem and HINT in check.problem


def test_public_literals_pass_and_names_are_left_to_the_resolver():
    check = written_host_check("[2606:2800::1]", what="x")
    assert check == HostCheck(None, (ipaddress.ip_address("2606:2800::1"),), host="2606:2800::1")
    assert written_host_check("example.com", what="x") is None
    assert written_host_check("1572395042", what="x") is None  # public: the resolver answers as before


def test_every_resolved_address_must_be_global():
    public, private = ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.1")
    refused = resolved_host_check("git.example.com", [public, private], what="the repository's")
    assert refused.address == private and not refused.addresses
    assert refused.problem == ("the repository's host git.example.com resolves to 10.0.0.1, a loopback, private or "
                               f"link-local address; refused (set {HINT} to allow internal targets)")
    allowed = resolved_host_check("git.example.com", [public, public], what="the repository's")
    assert allowed.problem is None and allowed.addresses == (public,)


def test_the_older_wording_names_the_address_and_the_older_setting():
    check = written_host_check("127.0.0.1", what="the base URL's")
    assert worded_refusal(check, lead="the base URL's host ", allow="providers") == (
        "the base URL's host 127.0.0.1 resolves to 127.0.0.1, a loopback, private or link-local address; "
        "refused (set DEVOPS_NOTIFY_ALLOW_PRIVATE_TARGETS=true to allow internal providers)")
    local = written_host_check("localhost", what="x")
    assert worded_refusal(local, lead="") == (
        "localhost names this machine, a loopback, private or link-local address; "
        "refused (set DEVOPS_NOTIFY_ALLOW_PRIVATE_TARGETS=true to allow internal targets)")


def test_url_host_and_default_ports():
    assert url_host_port("https://Example.com/x") == ("example.com", 443)
    assert url_host_port("http://[::1]/") == ("::1", 80)
    assert url_host_port("http://h:8080") == ("h", 8080)
    with pytest.raises(ValueError):
        url_host_port("http://h:99999/")


# ---- repositories and images -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repository", "kind", "host"),
    [("https://github.com/a/b.git", "url", "github.com"), ("git@github.com:a/b.git", "scp", "github.com"),
     ("user@[::1]:repo.git", "scp", "::1"), ("./dir:with-colon", "local", ""), ("/srv/repo.git", "local", ""),
     ("ext::sh", "helper", "")],
)
def test_repository_strings_are_classified_like_git_does(repository, kind, host):
    remote = parse_git_remote(repository)
    assert (remote.kind, remote.host) == (kind, host)


@pytest.mark.parametrize("repository", ["http://2130706433/x.git", "http://0/x.git", "https://[::]/x.git",
                                        "git@0x7f.1:team/app.git", "https://127.0.0.1./x.git", "/srv/repo.git",
                                        "file:///srv/repo.git", "https://localhost./x.git"])
def test_internal_repositories_are_refused_at_save_unless_allowed(repository):
    problem = static_repository_problem(repository, False)
    assert problem is not None and HINT in problem
    assert static_repository_problem(repository, True) is None


def test_repository_names_helpers_and_schemes_at_save():
    assert static_repository_problem("https://git.example.com/team/app.git", False) is None  # resolved at run time
    assert "remote helper" in static_repository_problem("ext::sh -c id", True)
    assert "scheme 'ftp'" in static_repository_problem("ftp://example.com/x.git", True)


@pytest.mark.parametrize("image", ["2130706433:5000/app", "0x7f.1:5000/app", "127.0.0.1.:5000/app",
                                   "[::]:5000/app", "localhost/app", "10.0.0.5/app:1"])
def test_images_from_internal_registries_are_refused_at_save_unless_allowed(image):
    problem = static_image_problem(image, False)
    assert problem is not None and problem.startswith("the image's registry host") and HINT in problem
    assert static_image_problem(image, True) is None


@pytest.mark.parametrize("image", ["busybox", "library/nginx:1.27", "ghcr.io/team/app:1", "registry.invalid:5000/app",
                                   None, 5])
def test_hub_public_and_named_registries_pass_at_save(image):
    assert static_image_problem(image, False) is None
