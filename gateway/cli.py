"""Command line: `gateway serve|status|reload|health|stats|rollout|inspect|report|replay|demo`
(also `python -m gateway`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROG = "gateway"


def _serve(args: argparse.Namespace) -> int:
    from gateway.tfserving.cli import serve

    return serve(args, PROG)


TOKEN_ENV = "GATEWAY_ADMIN_TOKEN"


def _channel(args: argparse.Namespace) -> Any:
    """A channel to `--target`: TLS when `--tls-ca` is given (mTLS with `--tls-cert/-key`)."""
    import grpc

    if args.tls_ca is None:
        return grpc.insecure_channel(args.target)
    cert = Path(args.tls_cert).read_bytes() if args.tls_cert else None
    key = Path(args.tls_key).read_bytes() if args.tls_key else None
    creds = grpc.ssl_channel_credentials(Path(args.tls_ca).read_bytes(), key, cert)
    options = (
        [("grpc.ssl_target_name_override", args.tls_server_name)] if args.tls_server_name else []
    )
    return grpc.secure_channel(args.target, creds, options=options)


def _auth_metadata(args: argparse.Namespace) -> list[tuple[str, str]]:
    """`authorization: Bearer ...` from --token-file or $GATEWAY_ADMIN_TOKEN (if any)."""
    import os

    token = Path(args.token_file).read_text().strip() if args.token_file else None
    token = token or os.environ.get(TOKEN_ENV, "").strip()
    return [("authorization", f"Bearer {token}")] if token else []


def _health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with _channel(args) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(service=args.model), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            print(
                f"{PROG}: health check failed: {exc.code().name}: {exc.details()}", file=sys.stderr
            )
            return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(name)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def _status(args: argparse.Namespace) -> int:
    import grpc

    from gateway._proto.gateway.v1 import admin_pb2, admin_pb2_grpc

    with _channel(args) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        try:
            reply = stub.GetStatus(admin_pb2.GetStatusRequest(model=args.model or ""), timeout=10)
        except grpc.RpcError as exc:
            print(f"{PROG}: error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    for model in reply.models:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(model.labels.items()))
        print(
            f"{model.name}  serving={model.serving}  base_path={model.base_path}"
            f"  labels: {labels or '-'}"
        )
        for v in model.versions:
            extra = f"  labels={','.join(v.labels)}" if v.labels else ""
            reason = f"  reason: {v.error}" if v.error else ""
            runtime = f"  runtime={v.runtime}" if v.runtime else ""
            print(f"  v{v.version:<6} {v.state:<10} failures={v.failures}{runtime}{extra}{reason}")
    return 0


def _reload(args: argparse.Namespace) -> int:
    import grpc

    from gateway._proto.gateway.v1 import admin_pb2, admin_pb2_grpc

    with _channel(args) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        try:
            reply = stub.ReloadConfig(
                admin_pb2.ReloadConfigRequest(), timeout=60, metadata=_auth_metadata(args)
            )
        except grpc.RpcError as exc:
            print(f"{PROG}: error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    print("\n".join(reply.changes) or "no changes")
    return 0


def _stats(args: argparse.Namespace) -> int:
    import grpc

    from gateway._proto.gateway.v1 import admin_pb2, admin_pb2_grpc

    with _channel(args) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        try:
            reply = stub.GetFeatureSkew(
                admin_pb2.GetFeatureSkewRequest(model=args.model), timeout=10
            )
        except grpc.RpcError as exc:
            print(f"{PROG}: error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    if not reply.features:
        print(f"{args.model}: no version with training statistics is serving")
        return 0
    print(f"{'version':>7}  {'feature':<20} {'values':>8} {'js':>8} {'linf':>8} {'psi':>8}  drift")
    for f in reply.features:
        flag = f"DRIFT ({', '.join(f.crossed)})" if f.drifted else "-"
        print(
            f"{f.version:>7}  {f.feature:<20} {f.num_values:>8} {f.js:>8.4f} {f.linf:>8.4f} "
            f"{f.psi:>8.4f}  {flag}"
        )
    return 0


def _rollout(args: argparse.Namespace) -> int:
    from gateway.rollout_cli import run_rollout

    with _channel(args) as channel:
        return run_rollout(args, channel, _auth_metadata(args))


def _inspect(args: argparse.Namespace) -> int:
    from gateway.bundle.inspect import run_inspect

    return run_inspect(args)


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(Path(args.dir))


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    from gateway.tfserving.cli import USAGE, add_serve_arguments

    serve = sub.add_parser(
        "serve",
        help="run the gateway (--config and/or TF Serving's flags)",
        usage=USAGE.replace("%(prog)s", f"{PROG} serve"),
        allow_abbrev=False,
    )
    add_serve_arguments(serve)
    serve.set_defaults(func=_serve)

    target = argparse.ArgumentParser(add_help=False)
    target.add_argument("--target", default="127.0.0.1:8500", help="gateway address host:port")
    target.add_argument("--tls-ca", help="CA certificate: connect with TLS")
    target.add_argument("--tls-cert", help="client certificate (mTLS)")
    target.add_argument("--tls-key", help="client private key (mTLS)")
    target.add_argument("--tls-server-name", help="expected server name in its certificate")
    target.add_argument(
        "--token-file", help=f"admin bearer token for mutating calls (default: ${TOKEN_ENV})"
    )

    health = sub.add_parser("health", parents=[target], help="gRPC health check (exit 0 = SERVING)")
    health.add_argument("--model", default="", help="model name (default: whole server)")
    health.add_argument("--timeout", type=float, default=3.0)
    health.set_defaults(func=_health)

    status = sub.add_parser("status", parents=[target], help="model and version states")
    status.add_argument("model", nargs="?", help="one model (default: all)")
    status.set_defaults(func=_status)

    reload = sub.add_parser("reload", parents=[target], help="re-read the config file")
    reload.set_defaults(func=_reload)

    stats = sub.add_parser("stats", parents=[target], help="live feature skew of a model")
    stats.add_argument("model")
    stats.set_defaults(func=_stats)

    from gateway.rollout_cli import add_rollout_parser

    add_rollout_parser(sub, target, _rollout)

    inspect = sub.add_parser("inspect", help="print a version's bundle (offline)")
    inspect.add_argument("version_dir")
    inspect.add_argument("--no-verify", action="store_true", help="skip the sha256 check")
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(func=_inspect)

    from gateway.report.cli import add_report_parser

    add_report_parser(sub)

    from gateway.replay import add_replay_parser

    add_replay_parser(sub)

    demo = sub.add_parser("demo", help="build a demo repository, serve it, send traffic")
    demo.add_argument("--dir", default="demo-run", help="working directory (recreated)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
