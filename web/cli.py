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

import psycopg

from assetlog.cli_support import whole_number
from assetlog.config import Settings
from assetlog.errors import AssetlogError
from assetlog.metrics import add_metrics_flags, start_from_args
from assetlog.query.store import LineageStore
from assetlog.tokens import TokenChecker, stored_digest
from assetlog.web.app import create_app
from assetlog.web.auth import AuthPolicy
from assetlog.web.picture import GraphDrawer
from assetlog.web.urls import asset_url

MAX_CONNECTIONS = 100  # PostgreSQL's default max_connections
MAX_PICTURES = 10_000  # a hub's picture is about 100 kB

DEFAULT_PORT = 8000


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve", help="the read-only web view: assets, owners, health and lineage pictures, plus /api JSON",
        description="Serve the web view over the projection database, read-only (ASSETLOG_POSTGRES_READONLY_DSN "
                    "if set, else ASSETLOG_POSTGRES_DSN in read-only sessions). Every page and API route asks for "
                    "an access token (`assetlog tokens create NAME`), or for the user an authenticating proxy "
                    "names (--trusted-header with --trusted-proxy); --no-auth opens it, on loopback only.")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=whole_number(0, 65535), default=DEFAULT_PORT,
                       help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)")
    serve.add_argument("--connections", type=whole_number(1, MAX_CONNECTIONS), default=8, metavar="N",
                       help="database connections shared by concurrent requests (default 8)")
    # The default is CACHED_PICTURES of assetlog.web.picture, not imported here: it would load the whole
    # web stack for every command line (tests/test_web_cli.py checks that the help says the same number).
    serve.add_argument("--pictures", type=whole_number(0, MAX_PICTURES), metavar="N",
                       help="lineage pictures kept once laid out, the least recently shown dropped first "
                            "(default 64; 0 runs Graphviz for every picture)")
    serve.add_argument("--access-log", action="store_true", help="log every request on stderr")
    add_metrics_flags(serve)
    serve.add_argument("--no-auth", action="store_true",
                       help="no sign-in at all (allowed only when listening on a loopback address)")
    serve.add_argument("--trusted-header", metavar="NAME",
                       help="single sign-on behind an authenticating reverse proxy: accept the user it names in "
                            "this header (e.g. X-Forwarded-User), from --trusted-proxy addresses only")
    serve.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDRESS",
                       type=_network, help="address or network of that proxy (repeatable)")
    serve.set_defaults(handler=_serve)


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address or network") from None


def _check_auth_flags(args: argparse.Namespace) -> None:
    """--no-auth only on loopback; a trusted header only with the proxies it is trusted from."""
    if args.no_auth:
        if args.trusted_header or args.trusted_proxy:
            raise AssetlogError("--no-auth cannot be combined with --trusted-header/--trusted-proxy")
        if not _is_loopback(args.host):
            raise AssetlogError(f"--no-auth is allowed only on a loopback address, not {args.host}: "
                                "create tokens with `assetlog tokens create NAME` instead")
    elif bool(args.trusted_header) != bool(args.trusted_proxy):
        raise AssetlogError("--trusted-header and --trusted-proxy go together: the header is believed only "
                            "from the proxy's addresses")


def _auth_policy(args: argparse.Namespace, store):
    """The sign-in rule `serve` enforces (tokens, plus a proxy's header if asked), None for --no-auth."""
    if args.no_auth:
        return None
    checker = TokenChecker(lambda token_id: store.read(lambda conn: stored_digest(conn, token_id)))
    return AuthPolicy(tokens=checker, trusted_header=args.trusted_header,
                      trusted_proxies=tuple(args.trusted_proxy))


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


def serve_app(app, sock: socket.socket, access_log: bool) -> None:
    """Run an ASGI app on a bound socket until SIGINT or SIGTERM (the web view, the OpenLineage receiver).

    uvicorn stops gracefully on those signals, then re-raises the signal into the handler that was
    there before it: make that one a no-op, so the caller's clean-up runs and the exit status is 0.
    """
    # deferred: uvicorn, only a running server needs it (not `--help`)
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=access_log, lifespan="off", server_header=False)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _require_token_table(store) -> None:
    try:
        store.read(lambda conn: conn.execute("SELECT 1 FROM access_tokens LIMIT 1").fetchall())
    except psycopg.errors.UndefinedTable:
        raise AssetlogError("the access_tokens table is missing: run `assetlog db migrate` (or serve with "
                            "--no-auth on 127.0.0.1)") from None


def _serve(args: argparse.Namespace) -> int:


    _check_auth_flags(args)
    settings = Settings.from_env()
    # Reachable, migrated, readable and the database the consumers write, before anyone is told to connect.
    with LineageStore.from_settings(settings, application_name="assetlog.web") as probe:
        probe.search(limit=1)
        if not args.no_auth:
            _require_token_table(probe)
    sock = _listen(args.host, args.port)
    store = LineageStore.from_settings(settings, pool_size=max(2, args.connections), application_name="assetlog.web",
                                       same_database_as=None)  # checked by the probe
    metrics = None
    try:
        policy = _auth_policy(args, store)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        print(f"assetlog: serving the web view on http://{shown}:{port}/ (read-only; Ctrl-C stops it)",
              file=sys.stderr, flush=True)
        metrics = start_from_args(args)
        drawer = GraphDrawer.find(asset_url, **({} if args.pictures is None else {"cached": args.pictures}))
        serve_app(create_app(store, drawer=drawer, auth_policy=policy), sock, args.access_log)
    finally:
        if metrics is not None:
            metrics.close()
        store.close()
        sock.close()
    print("assetlog: the web view stopped", file=sys.stderr, flush=True)
    return 0
