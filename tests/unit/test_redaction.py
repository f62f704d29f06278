"""Secrets in text, the pure half of tests/e2e/test_secrets.py: which API URLs are accepted,
and how a URL's password is redacted from a sentence.
"""

from __future__ import annotations

import pytest

from target_userpilot.errors import ConfigurationError
from target_userpilot.privacy.redact import redact, redact_url, without_userinfo
from target_userpilot.userpilot.hosts import check_api_url, is_loopback

from support.secrets import PG_SECRET

# The key goes to api_url only: https, or plain http to this machine.


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://analytex.userpilot.io", True),
        ("https://analytex-eu.userpilot.io/", True),
        ("http://127.0.0.1:8765", True),
        ("http://127.9.9.9", True),
        ("http://localhost:1", True),
        ("http://[::1]:8765", True),
        ("http://analytex.userpilot.io", False),
        ("http://localhost.example.com", False),
        ("http://127.0.0.1.nip.io", False),
        ("http://128.0.0.1", False),
        ("http://127.0.0.1@evil.example", False),
        ("ftp://127.0.0.1", False),
        ("analytex.userpilot.io", False),
    ],
)
def test_only_https_or_loopback_http_is_accepted_as_api_url(url: str, allowed: bool) -> None:
    if allowed:
        assert check_api_url(url) == url.rstrip("/")
    else:
        with pytest.raises(ConfigurationError):
            check_api_url(url)


def test_loopback_means_127_slash_8_localhost_and_ipv6_one() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.255.0.9", "localhost", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("128.0.0.1", "127.0.0", "localhost.", "0.0.0.0"))  # noqa: S104


# URL passwords: redacted by the URL's structure (target_userpilot/privacy/redact.py), every form


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"postgresql://ledger:{PG_SECRET}@db.internal/ledger",
            "postgresql://ledger:***@db.internal/ledger",
        ),
        ("postgresql://ledger:p@ss:w/rd%x@host/db", "postgresql://ledger:***@host/db"),
        (
            "postgresql://db.internal/ledger?password=Qu3ryS3cret&sslmode=require",
            "postgresql://db.internal/ledger?password=***&sslmode=require",
        ),
        (
            "mysql://u:MyS3cretPw@host/db?sslpassword=Qu3ryS3cret",
            "mysql://u:***@host/db?sslpassword=***",
        ),
        ("foo+bar://u:MyS3cretPw@h:notaport/x", "foo+bar://u:***@h:notaport/x"),
        ("postgresql:/ledger?password=Qu3ryS3cret", "postgresql:/ledger?password=***"),
        (
            "http://proxyuser:Pr0xy#S3cret@proxy.internal:3128",
            "http://proxyuser:***@proxy.internal:3128",
        ),
        (
            "https://user:ApiUrlS3cret@analytex.userpilot.io",
            "https://user:***@analytex.userpilot.io",
        ),
        ("postgresql://ledger@db.internal/ledger", "postgresql://ledger@db.internal/ledger"),
        (".target-userpilot/state.db", ".target-userpilot/state.db"),
    ],
)
def test_a_url_is_redacted_by_its_structure(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact(f"state_db '{url}' failed") == f"state_db '{shown}' failed"


def test_without_userinfo_strips_user_and_password_up_to_the_last_at() -> None:
    assert without_userinfo("https://user:p@ss@analytex.userpilot.io/") == (
        "https://analytex.userpilot.io/"
    )
    assert without_userinfo("https://analytex.userpilot.io") == "https://analytex.userpilot.io"


def test_a_short_password_does_not_rewrite_the_words_around_it() -> None:
    text = "driver 'psycopg2' is not installed (No module named 'psycopg2'); password=pg, 'pg'"

    redacted = redact(text, ["pg"])

    assert redacted == (
        "driver 'psycopg2' is not installed (No module named 'psycopg2'); password=***, '***'"
    )
