"""The `acvg-bridge` command line (design §2.1): serve, demo, mappings check, config check,
replay (bridge/replay_cli.py)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from bridge.app import Gateway, GatewayKey
from bridge.config import Config, load_config, parse_listen
from bridge.errors import ConfigError, MappingError
from bridge.logs import configure_logging

# uvloop, when installed, is an option: side by side in bench/ it cost the same CPU per turn as
# the standard loop (docs/benchmarks.md), so it is not a dependency.
LOOPS = ("asyncio", "uvloop") if importlib.util.find_spec("uvloop") is not None else ("asyncio",)


def _serve(args: argparse.Namespace) -> int:
    from bridge.app import create_app

    try:
        config = load_config(args.config)
        if args.listen:
            parse_listen(args.listen)
            config = config.model_copy(update={"listen": args.listen})
        app = create_app(config, config_path=Path(args.config))
    except (ConfigError, MappingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: --listen: {exc}", file=sys.stderr)
        return 2
    app[GatewayKey].listen_override = args.listen
    app.on_startup.append(_reload_on_sighup)
    host, port = parse_listen(config.listen)
    print(f"acvg-bridge listening on http://{config.listen}", file=sys.stderr)
    from bridge.access_log import runner_options

    options = runner_options(args.access_log)
    if args.loop == "uvloop":
        import uvloop  # type: ignore[import-not-found, unused-ignore]

        uvloop.run(_run(app, host, port, options))
    else:
        asyncio.run(_run(app, host, port, options))
    return 0


async def _run(app: web.Application, host: str, port: int, runner_options: dict[str, Any]) -> None:
    """Serve until SIGTERM or SIGINT, drain, then clean up (the listener stays open while
    draining: calls in flight keep reaching the bridge, and readiness answers 503).
    `runner_options` set the access log (bridge/access_log.py)."""
    from bridge.transport.http_errors import JsonErrorRunner

    # Server shutdown waits this long for requests still running after the drain.
    runner = JsonErrorRunner(app, handle_signals=False, shutdown_timeout=10.0, **runner_options)
    await runner.setup()
    freeze_startup_heap()
    try:
        await web.TCPSite(runner, host, port).start()
        await _drain_on_signal(app[GatewayKey])
    finally:
        await runner.cleanup()


def freeze_startup_heap() -> None:
    """Move what start-up built (modules, mappings, metadata: ~55,000 objects) out of the
    collector's reach. A full collection scans every tracked object while the event loop waits;
    these live as long as the process, so each full collection is ~10 ms shorter for it."""
    gc.collect()
    gc.freeze()


async def _drain_on_signal(gateway: Gateway) -> None:
    """Wait for SIGTERM/SIGINT, then drain; a second signal cuts the drain short (cleanup then
    ends the calls left at once)."""
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    stops = (signal.SIGTERM, signal.SIGINT)
    for sig in stops:
        loop.add_signal_handler(sig, signalled.set)
    try:
        await signalled.wait()
        signalled.clear()
        timeout = gateway.config.drain_timeout_s
        logging.getLogger("bridge").info("stopping: draining for up to %.0f s", timeout)
        drain = asyncio.create_task(gateway.drain(timeout))
        again = asyncio.create_task(signalled.wait())
        await asyncio.wait({drain, again}, return_when=asyncio.FIRST_COMPLETED)
        if not drain.done():
            logging.getLogger("bridge").info("stopping now: the calls left end at once")
        for task in (drain, again):
            task.cancel()
        failed = (await asyncio.gather(drain, again, return_exceptions=True))[0]
        if isinstance(failed, Exception):
            logging.getLogger("bridge").error("drain failed", exc_info=failed)
    finally:
        for sig in stops:
            loop.remove_signal_handler(sig)


async def _reload_on_sighup(app: web.Application) -> None:
    """SIGHUP re-reads the config file atomically, like `POST /admin/reload`."""
    from bridge.transport.admin import reload_gateway

    gateway = app[GatewayKey]

    def reload() -> None:
        try:
            reload_gateway(gateway)
        except (ConfigError, MappingError) as exc:
            logging.getLogger("bridge").error("reload refused, nothing changed: %s", exc)
        else:
            logging.getLogger("bridge").info("configuration reloaded")

    if hasattr(signal, "SIGHUP"):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)


def _mappings_check(args: argparse.Namespace) -> int:
    from bridge.mapping.loader import check_mappings

    directory = Path(args.dir) if args.dir else None
    errors = check_mappings(directory)
    for error in errors:
        print(f"{error.file}: {error.path}: {error.reason}")
    if errors:
        print(f"{len(errors)} error(s)", file=sys.stderr)
        return 1
    print("mappings ok")
    return 0


def _config_check(args: argparse.Namespace) -> int:
    try:
        config: Config = load_config(args.file)
    except ConfigError as exc:
        print(str(exc))
        return 1
    if config.mappings:
        from bridge.mapping.loader import check_mappings

        errors = check_mappings(Path(config.mappings))
        for error in errors:
            print(f"mappings: {error.file}: {error.path}: {error.reason}")
        if errors:
            return 1
    print(f"config ok: {len(config.routes)} route(s)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    if args.cluster:
        from bridge.sim.cluster_demo import run_cluster_demo

        if args.serve:
            print("error: --serve is not available with --cluster", file=sys.stderr)
            return 2
        return run_cluster_demo(calls=args.calls)
    from bridge.sim.demo import run_demo

    return asyncio.run(run_demo(calls=1 if args.calls is None else args.calls, serve=args.serve))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acvg-bridge",
        description="Migration gateway: AudioCodes Bot API in front, Voice Gateway behind.",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", required=True, help="YAML configuration file")
    serve.add_argument("--listen", help="HOST:PORT, overrides the config's listen")
    serve.add_argument(
        "--loop",
        choices=LOOPS,
        default="asyncio",
        help="event loop (default: asyncio; uvloop if installed)",
    )
    serve.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one short line per request at INFO on aiohttp.access: method, kind, status, ms, "
        "route, conversation (default: on; --no-access-log: none, at no cost)",
    )
    serve.set_defaults(run=_serve)
    demo = sub.add_parser("demo", help="bridge + simulators on loopback, scripted calls")
    demo.add_argument(
        "--calls",
        type=int,
        default=None,
        help="times to run each scenario (default 1); with --cluster: calls to play (default 18)",
    )
    demo.add_argument(
        "--serve", action="store_true", help="keep the bridge and console up after the report"
    )
    demo.add_argument(
        "--cluster",
        action="store_true",
        help="3 instances sharing redis-server behind nginx, one killed and one restarted mid-run",
    )
    demo.set_defaults(run=_demo)
    mappings = sub.add_parser("mappings", help="mapping files")
    msub = mappings.add_subparsers(dest="mappings_command", required=True)
    mcheck = msub.add_parser("check", help="validate mapping files")
    mcheck.add_argument("dir", nargs="?", help="directory (default: the shipped mappings)")
    mcheck.set_defaults(run=_mappings_check)
    config = sub.add_parser("config", help="configuration files")
    csub = config.add_subparsers(dest="config_command", required=True)
    ccheck = csub.add_parser("check", help="validate a configuration file")
    ccheck.add_argument("file")
    ccheck.set_defaults(run=_config_check)
    from bridge.replay_cli import add_parser as add_replay

    add_replay(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        configure_logging(str(args.log_level))
    except ValueError as exc:
        print(f"error: --log-level: {exc}", file=sys.stderr)
        return 2
    result: int = args.run(args)
    return result
