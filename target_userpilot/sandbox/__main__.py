"""`userpilot-sandbox`: run the emulator from a shell, until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from target_userpilot.sandbox.httpd import require_loopback
from target_userpilot.sandbox.server import Sandbox

#: Where the sandbox listens and the key it takes with no options: what meltano.yml's dev
#: environment, examples/config.sandbox.json and the README's Meltano steps point at.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_API_KEY = "sandbox-key"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="userpilot-sandbox",
        description=(
            "Serve a Userpilot-compatible bulk API on loopback, to try target-userpilot "
            f"offline. With no options it listens on http://{DEFAULT_HOST}:{DEFAULT_PORT} and "
            f"accepts the API key {DEFAULT_API_KEY}: the api_url and api_key of meltano.yml's "
            "dev environment and examples/config.sandbox.json. Profiles: GET "
            "/_sandbox/profiles/users and /_sandbox/profiles/companies; scheduled deletions: GET "
            "/_sandbox/deletions; events: GET /_sandbox/events; imported events: GET "
            "/_sandbox/imports."
        ),
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"loopback address (default {DEFAULT_HOST})"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"TCP port (default {DEFAULT_PORT}); 0 picks a free port",
    )
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument(
        "--api-key",
        default=DEFAULT_API_KEY,
        help=f"the only accepted key (default {DEFAULT_API_KEY}, which is public)",
    )
    auth.add_argument("--no-auth", action="store_true", help="accept any API key")
    parser.add_argument(
        "--rows-per-minute",
        type=float,
        default=1800.0,
        help="job processing rate; 0 completes jobs at once (default 1800, Userpilot's rate)",
    )
    parser.add_argument(
        "--delete-interval",
        type=float,
        default=2.0,
        help="seconds between admitted deletion requests, else 429 (default 2, Userpilot's "
        "limit; 0 disables)",
    )
    parser.add_argument(
        "--max-delete-ids",
        type=int,
        default=None,
        help="ids one deletion request may name, else 413 (default: no limit)",
    )
    parser.add_argument(
        "--events-per-minute",
        type=float,
        default=600.0,
        help="track requests admitted in any 60 s, else 429 (default 600, Userpilot's limit; "
        "0 disables)",
    )
    parser.add_argument(
        "--track-any-user",
        action="store_true",
        help="accept events for users without a profile (default: 404, as Userpilot)",
    )
    parser.add_argument(
        "--imports-own-lane",
        action="store_true",
        help="let an import job run beside a bulk job (default: one job of either kind at a "
        "time, 409 otherwise)",
    )
    parser.add_argument(
        "--import-status-at",
        choices=("background_jobs", "imports", "nowhere"),
        default="background_jobs",
        help="where an import job's status is served and the job listed (default "
        "background_jobs): background_jobs at GET /v1/background_jobs/{id}, imports only at GET "
        "/v1/imports/{id} (listed at GET /v1/imports), or nowhere (404)",
    )
    parser.add_argument(
        "--elapsed-time",
        choices=("seconds", "milliseconds", "rounded", "since_creation"),
        default="seconds",
        help="how a job's undocumented elapsed_time reads (default seconds), to try a client "
        "against the readings Userpilot might use",
    )
    parser.add_argument(
        "--tls-cert", help="PEM certificate: serve HTTPS (with --tls-key; default plain HTTP)"
    )
    parser.add_argument("--tls-key", help="the certificate's unencrypted PEM private key")
    parser.add_argument(
        "--verbose", action="store_true", help="log each request to stderr (default: quiet)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the sandbox in the foreground; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        require_loopback(args.host)
    except ValueError as exc:
        parser.error(str(exc))
    if args.rows_per_minute < 0:
        parser.error("--rows-per-minute must be 0 or more")
    if args.delete_interval < 0:
        parser.error("--delete-interval must be 0 or more")
    if args.events_per_minute < 0:
        parser.error("--events-per-minute must be 0 or more")
    if args.max_delete_ids is not None and args.max_delete_ids < 1:
        parser.error("--max-delete-ids must be 1 or more")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.verbose:
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
        )

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    try:
        sandbox = Sandbox(
            host=args.host,
            port=args.port,
            api_key=None if args.no_auth else args.api_key,
            rows_per_minute=args.rows_per_minute,
            delete_interval=args.delete_interval,
            max_delete_ids=args.max_delete_ids,
            events_per_minute=args.events_per_minute,
            track_requires_user=not args.track_any_user,
            imports_share_lane=not args.imports_own_lane,
            import_status_at=args.import_status_at,
            tls=(args.tls_cert, args.tls_key) if args.tls_cert else None,
            elapsed_time=args.elapsed_time,
        )
    except ValueError as exc:
        parser.error(str(exc))
    try:
        sandbox.start()
    except OSError as exc:
        print(
            f"userpilot-sandbox: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 1
    print(f"userpilot-sandbox listening on {sandbox.url}", flush=True)
    try:
        # A timed wait keeps the main thread responsive to signals on every platform.
        while not stop.wait(0.5):
            pass
    finally:
        sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
