"""``userpilot-sandbox`` as a command: it serves until SIGTERM and never logs the key, refuses a
non-loopback host and a certificate without its key, and serves HTTPS with its limits.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from target_userpilot.sandbox import Sandbox

from support.messages import API_KEY

REPO = Path(__file__).resolve().parents[2]


# --- the command line ------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "target_userpilot.sandbox", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_cli_serves_until_sigterm_and_never_logs_the_key(anon: requests.Session) -> None:
    chosen_key = "cli-private-key-123"
    process = run_cli("--port", "0", "--api-key", chosen_key, "--rows-per-minute", "0", "--verbose")
    assert process.stdout is not None
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("userpilot-sandbox listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        response = anon.post(
            f"{url}/v1/users/bulk_identify",
            json={"users": [{"user_id": "u1"}]},
            headers={"Authorization": f"Token {chosen_key}"},
        )
        assert response.status_code == 202
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    assert "POST /v1/users/bulk_identify" in stderr
    assert chosen_key not in stderr


def test_cli_help_shows_every_default_the_readme_relies_on() -> None:
    """`--help` names each option's default: the README's Meltano block and meltano.yml's dev
    environment rely on http://127.0.0.1:8765 and the key sandbox-key without saying them."""
    from target_userpilot.sandbox.__main__ import _parser

    process = run_cli("--help")
    shown, _ = process.communicate(timeout=10)
    text = " ".join(shown.split())  # argparse wraps the help at the terminal's width

    assert process.returncode == 0
    assert "listens on http://127.0.0.1:8765 and accepts the API key sandbox-key" in text
    defaults = vars(_parser().parse_args([]))
    for name, default in defaults.items():
        if default in (None, False):
            continue  # an option that is off, or has no value, unless given
        written = f"{default:g}" if isinstance(default, float) else str(default)
        assert f"default {written}" in text, name
    config = json.loads((REPO / "examples" / "config.sandbox.json").read_text())
    assert config["api_url"] == "http://127.0.0.1:8765" and config["api_key"] == "sandbox-key"


def test_cli_refuses_a_non_loopback_host() -> None:
    process = run_cli("--host", "0.0.0.0", "--port", "0")  # noqa: S104 - refused on purpose
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 2
    assert "loopback" in stderr


# --- deletions -------------------------------------------------------------------------------

VERSION = {"X-API-Version": "2020-09-22"}


# --- tracked events --------------------------------------------------------------------------


def track(
    api: requests.Session, sb: Sandbox, body: dict[str, Any], headers: dict[str, Any] | None = None
) -> requests.Response:
    """A track request, with the version header unless `headers` says otherwise."""
    return api.post(
        f"{sb.url}/v1/track", json=body, headers=VERSION if headers is None else headers
    )


# --- TLS -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key, made for this run."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return str(cert), str(key)


def test_tls_serves_https_that_verifies_with_the_given_certificate(
    tls_files: tuple[str, str], anon: requests.Session
) -> None:
    cert, _ = tls_files
    with Sandbox(api_key=API_KEY, tls=tls_files) as sb:
        assert sb.url.startswith("https://127.0.0.1:")
        headers = {"Authorization": f"Token {API_KEY}"}
        answer = anon.post(
            f"{sb.url}/v1/users/bulk_identify",
            json={"users": [{"user_id": "u1"}]},
            headers=headers,
            verify=cert,
        )
        assert answer.status_code == 202
        assert list(anon.get(f"{sb.url}/_sandbox/profiles/users", verify=cert).json()) == ["u1"]

        # A client that does not trust the certificate, or speaks plain HTTP, gets nowhere...
        with pytest.raises(requests.exceptions.SSLError):
            anon.get(f"{sb.url}/v1/background_jobs", headers=headers)
        with pytest.raises(requests.ConnectionError):
            anon.get(sb.url.replace("https://", "http://") + "/v1/background_jobs")
        # ...and leaves the sandbox serving everyone else.
        assert anon.get(f"{sb.url}/v1/background_jobs", headers=headers, verify=cert).ok
        assert sb.stats()["uploads"] == 1


def test_cli_serves_https_with_the_deletion_and_track_limits(
    tls_files: tuple[str, str], anon: requests.Session
) -> None:
    cert, key = tls_files
    process = run_cli(
        *("--port", "0", "--api-key", API_KEY, "--tls-cert", cert, "--tls-key", key),
        *("--delete-interval", "0", "--max-delete-ids", "1"),
        *("--events-per-minute", "1", "--track-any-user"),
    )
    assert process.stdout is not None
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("userpilot-sandbox listening on https://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1]
        headers = {"Authorization": f"Token {API_KEY}", **VERSION}

        def delete(ids: list[str]) -> int:
            return anon.delete(
                f"{url}/v1/users", json={"users": ids}, headers=headers, verify=cert
            ).status_code

        def track_one() -> int:
            event = {"user_id": "anyone", "event_name": "e"}
            return anon.post(
                f"{url}/v1/track", json=event, headers=headers, verify=cert
            ).status_code

        assert [delete(["u1", "u2"]), delete(["u1"]), delete(["u2"])] == [413, 202, 202]
        assert [track_one(), track_one()] == [202, 429]
        deletions = anon.get(f"{url}/_sandbox/deletions", verify=cert).json()
        assert deletions == {"users": ["u1", "u2"], "companies": []}
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0


def test_cli_refuses_a_certificate_without_its_key(tls_files: tuple[str, str]) -> None:
    process = run_cli("--port", "0", "--tls-cert", tls_files[0])
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 2
    assert "--tls-cert and --tls-key go together" in stderr
