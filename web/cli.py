"""`assetlog serve`: the read-only web view on one address (loopback by default).

The database is checked before the server listens, so a wrong DSN or an
unmigrated database is one line and exit status 1, not a page of errors
on the first request. The socket is bound here too: a port already in use
is the same kind of one-line error. SIGINT or SIGTERM finishes the requests
in hand, then exits 0.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import signal
import socket
import sys

from assetlog.cli import whole_number
from assetlog.errors import AssetlogError

MAX_CONNECTIONS = 100  # PostgreSQL's default max_connections

DEFAULT_PORT = 8000


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is from 0 to 65535, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve", help="the read-only web view: assets, owners, health and lineage pictures, plus /api JSON",
        description="Serve the web view over the projection database, read-only (ASSETLOG_POSTGRES_READONLY_DSN "
                    "if set, else ASSETLOG_POSTGRES_DSN in read-only sessions). There is no login: keep it on "
                    "127.0.0.1 or behind a proxy that authenticates.")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=DEFAULT_PORT,
                       help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)")
    serve.add_argument("--connections", type=whole_number(1, MAX_CONNECTIONS), default=8, metavar="N",
                       help="database connections shared by concurrent requests (default 8)")
    serve.add_argument("--access-log", action="store_true", help="log every request on stderr")
    serve.set_defaults(handler=_serve)


def _listen(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET  # a host name: resolved by bind
    # proto named explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say they are TCP,
    # and without it every kept-alive response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise AssetlogError(f"port {port} on {host} is already in use: choose another with --port") from None
        raise AssetlogError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from assetlog.config import Settings
    from assetlog.projections.store import LineageStore
    from assetlog.web.app import create_app

    settings = Settings.from_env()
    # Reachable, migrated, readable and the database the consumers write, before anyone is told to connect.
    with LineageStore.from_settings(settings, application_name="assetlog.web") as probe:
        probe.search(limit=1)
    sock = _listen(args.host, args.port)
    store = LineageStore.from_settings(settings, pool_size=max(2, args.connections), application_name="assetlog.web",
                                       same_database_as=None)  # checked by the probe
    try:
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        print(f"assetlog: serving the web view on http://{shown}:{port}/ (read-only; Ctrl-C stops it)",
              file=sys.stderr, flush=True)
        if not _is_loopback(host):
            print("assetlog: warning: no login protects this view; anyone who can reach this address can "
                  "read the lineage", file=sys.stderr, flush=True)
        config = uvicorn.Config(create_app(store), log_level="warning", access_log=args.access_log,
                                lifespan="off", server_header=False)
        # uvicorn stops gracefully on SIGINT/SIGTERM, then re-raises the signal into the handler that was
        # there before it: make that one a no-op, so the store is closed and the exit status is 0.
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            uvicorn.Server(config).run(sockets=[sock])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        store.close()
        sock.close()
    print("assetlog: the web view stopped", file=sys.stderr, flush=True)
    return 0
