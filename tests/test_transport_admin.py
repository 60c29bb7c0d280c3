"""The admin endpoints over real HTTP: auth, route summary, atomic reload and its rejections."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from bridge.app import Gateway, GatewayKey, create_app
from bridge.config import Config, load_config
from bridge.mapping.engine import Engine
from bridge.mapping.loader import SHIPPED_DIR
from bridge.sim.legacy_endpoint import LegacyEndpointSim
from bridge.transport.admin import add_admin_routes, reload_gateway

ADMIN = {"Authorization": "Bearer admin-tok"}
ROUTE_TOKEN = {"Authorization": "Bearer r-tok"}


def _doc(**top: Any) -> dict[str, Any]:
    route = {
        "token": "r-tok",
        "voicegateway": {"url": "ws://127.0.0.1:9/vg"},
        "legacy": {"url": "http://127.0.0.1:9/legacy", "token": "legacy-tok"},
        "migration": {"voicegateway_percent": 10},
    }
    return {"admin_token": "admin-tok", "routes": {"r": route}, **top}


@dataclass
class Admin:
    app: web.Application
    url: str
    http: aiohttp.ClientSession
    file: Path

    @property
    def gateway(self) -> Gateway:
        return self.app[GatewayKey]

    def write(self, doc: dict[str, Any] | str) -> None:
        self.file.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))

    async def call(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        async with self.http.request(method, self.url + path, headers=headers) as resp:
            return resp.status, await resp.json()

    def rejected(self, reason: str) -> float:
        labels = {"route": "_admin", "reason": reason}
        value = self.gateway.metrics.registry.get_sample_value(
            "acvg_rejected_requests_total", labels
        )
        return 0.0 if value is None else value


AdminFactory = Callable[..., Awaitable[Admin]]


def _has_admin_routes(app: web.Application) -> bool:
    return any(r.canonical == "/admin/reload" for r in app.router.resources())


@pytest.fixture
async def admin_factory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[AdminFactory]:
    if not hasattr(Gateway, "swap"):

        def swap(self: Gateway, config: Config, engine: Engine) -> None:
            self.config = config
            self.engine = engine

        monkeypatch.setattr(Gateway, "swap", swap, raising=False)
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(doc: dict[str, Any], *, with_path: bool = True) -> Admin:
        file = tmp_path / "bridge.yaml"
        file.write_text(yaml.safe_dump(doc))
        app = create_app(load_config(file))
        if not _has_admin_routes(app):
            add_admin_routes(app)
        gateway = app[GatewayKey]
        gateway.config_path = file if with_path else None  # type: ignore[attr-defined]
        gateway.listen_override = None  # type: ignore[attr-defined]
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        http = aiohttp.ClientSession()
        sessions.append(http)
        return Admin(app, f"http://127.0.0.1:{runner.addresses[0][1]}", http, file)

    yield start
    for http in sessions:
        await http.close()
    for runner in runners:
        await runner.cleanup()


async def test_routes_summary_without_secrets(admin_factory: AdminFactory) -> None:
    admin = await admin_factory(_doc())
    async with admin.http.get(admin.url + "/admin/routes", headers=ADMIN) as resp:
        assert resp.status == 200
        text = await resp.text()
    assert "tok" not in text
    assert "127.0.0.1:9" not in text
    _, body = await admin.call("GET", "/admin/routes", ADMIN)
    assert body["routes"]["r"]["paths"] == ["legacy", "voicegateway"]
    assert body["routes"]["r"]["migration"]["voicegateway_percent"] == 10


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic admin-tok"},
        {"Authorization": "Bearer r-tok"},
        {"Authorization": "Bearer"},
    ],
)
@pytest.mark.parametrize(("method", "path"), [("GET", "/admin/routes"), ("POST", "/admin/reload")])
async def test_bad_admin_token_is_401(
    admin_factory: AdminFactory, headers: dict[str, str] | None, method: str, path: str
) -> None:
    admin = await admin_factory(_doc())
    config = admin.gateway.config
    status, body = await admin.call(method, path, headers)
    assert status == 401
    assert body["error"] == "auth"
    assert admin.rejected("auth") == 1
    assert admin.gateway.config is config


@pytest.mark.parametrize(("method", "path"), [("GET", "/admin/routes"), ("POST", "/admin/reload")])
async def test_no_admin_token_disables_admin_api(
    admin_factory: AdminFactory, method: str, path: str
) -> None:
    admin = await admin_factory(_doc(admin_token=None))
    status, body = await admin.call(method, path, ADMIN)
    assert status == 403
    assert body == {"error": "admin_disabled", "message": "admin API disabled"}
    assert admin.rejected("admin_disabled") == 1


async def test_reload_applies_a_valid_change(admin_factory: AdminFactory) -> None:
    admin = await admin_factory(_doc())
    engine = admin.gateway.engine
    doc = _doc()
    doc["routes"]["r"]["migration"] = {"voicegateway_percent": 60, "force": "legacy"}
    doc["routes"]["new"] = {"token": "new-tok", "legacy": {"url": "http://127.0.0.1:9/x"}}
    admin.write(doc)

    status, body = await admin.call("POST", "/admin/reload", ADMIN)
    assert status == 200, body
    assert body["status"] == "reloaded"
    assert set(body["routes"]) == {"r", "new"}
    _, routes = await admin.call("GET", "/admin/routes", ADMIN)
    assert routes["routes"]["r"]["migration"]["voicegateway_percent"] == 60
    assert routes["routes"]["r"]["migration"]["force"] == "legacy"
    assert routes["routes"]["new"]["paths"] == ["legacy"]
    assert admin.gateway.engine is not engine
    # The VAIC-facing side serves the new route at once.
    status, probe = await admin.call("GET", "/ac/new", {"Authorization": "Bearer new-tok"})
    assert (status, probe) == (200, {"type": "ac-bot-api", "success": True})


async def test_reload_can_change_the_admin_token(admin_factory: AdminFactory) -> None:
    admin = await admin_factory(_doc())
    admin.write(_doc(admin_token="next-admin"))
    assert (await admin.call("POST", "/admin/reload", ADMIN))[0] == 200
    assert (await admin.call("GET", "/admin/routes", ADMIN))[0] == 401
    next_admin = {"Authorization": "Bearer next-admin"}
    assert (await admin.call("GET", "/admin/routes", next_admin))[0] == 200


async def test_reload_applies_the_divergence_sample_rate(admin_factory: AdminFactory) -> None:
    admin = await admin_factory(_doc())
    log = admin.gateway.divergence
    assert log.sample_rate == 1.0
    admin.write(_doc(divergence_log={"sample_rate": 0.1}))
    status, body = await admin.call("POST", "/admin/reload", ADMIN)
    assert status == 200, body
    assert admin.gateway.divergence is log  # the same file and recent entries
    assert log.sample_rate == 0.1


def _broken_mappings(tmp_path: Path) -> Path:
    broken = tmp_path / "broken"
    shutil.copytree(SHIPPED_DIR, broken)
    hangup = broken / "hangup.yaml"
    hangup.write_text(hangup.read_text() + "\nsurprise: true\n")
    return broken


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("yaml", "bridge.yaml: line 3: invalid YAML"),
        ("unknown_key", "bridge.yaml: routes.r.migration.percent: unknown key"),
        ("bad_value", "bridge.yaml: routes.r.migration.voicegateway_percent: "),
        ("mapping_dir", "missing: (dir): not a directory"),
        ("mapping_file", "hangup.yaml: surprise: unknown key"),
        ("listen", "bridge.yaml: listen: cannot change on reload"),
        ("max_body_bytes", "bridge.yaml: max_body_bytes: cannot change on reload"),
        ("tls", "bridge.yaml: tls.verify: cannot change on reload"),
        ("divergence_log", "bridge.yaml: divergence_log.path: cannot change on reload"),
        ("missing_file", "bridge.yaml: (file): cannot read"),
    ],
)
async def test_invalid_reload_changes_nothing(
    admin_factory: AdminFactory, tmp_path: Path, case: str, expected: str
) -> None:
    admin = await admin_factory(_doc())
    config, engine = admin.gateway.config, admin.gateway.engine
    _, before = await admin.call("GET", "/admin/routes", ADMIN)
    doc = _doc()
    if case == "yaml":
        admin.write("routes:\n  r: [unclosed\n")
    elif case == "unknown_key":
        doc["routes"]["r"]["migration"] = {"percent": 50}
        admin.write(doc)
    elif case == "bad_value":
        doc["routes"]["r"]["migration"] = {"voicegateway_percent": 250}
        admin.write(doc)
    elif case == "mapping_dir":
        admin.write(_doc(mappings=str(tmp_path / "missing")))
    elif case == "mapping_file":
        admin.write(_doc(mappings=str(_broken_mappings(tmp_path))))
    elif case == "listen":
        admin.write(_doc(listen="127.0.0.1:9999"))
    elif case == "max_body_bytes":
        admin.write(_doc(max_body_bytes=1_000_000))
    elif case == "tls":
        admin.write(_doc(tls={"verify": False}))
    elif case == "divergence_log":
        admin.write(_doc(divergence_log={"path": str(tmp_path / "divergences.jsonl")}))
    else:
        admin.file.unlink()

    status, body = await admin.call("POST", "/admin/reload", ADMIN)
    assert status == 400
    assert body["error"] == "invalid_config"
    assert expected in body["message"]
    assert admin.rejected("invalid_config") == 1
    assert admin.gateway.config is config
    assert admin.gateway.engine is engine
    assert (await admin.call("GET", "/admin/routes", ADMIN))[1] == before
    assert (await admin.call("GET", "/ac/r", ROUTE_TOKEN))[0] == 200


async def test_reload_without_config_file_is_409(admin_factory: AdminFactory) -> None:
    admin = await admin_factory(_doc(), with_path=False)
    status, body = await admin.call("POST", "/admin/reload", ADMIN)
    assert (status, body) == (
        409,
        {"error": "no_config_file", "message": "no config file to reload"},
    )
    assert admin.rejected("no_config_file") == 1


async def test_listen_override_keeps_reload_working(admin_factory: AdminFactory) -> None:
    admin = await admin_factory(_doc())
    gateway = admin.gateway
    gateway.config = gateway.config.model_copy(update={"listen": "127.0.0.1:7000"})
    gateway.listen_override = "127.0.0.1:7000"  # type: ignore[attr-defined]
    doc = _doc(listen="127.0.0.1:8888")
    doc["routes"]["r"]["migration"] = {"voicegateway_percent": 30}
    admin.write(doc)
    status, body = await admin.call("POST", "/admin/reload", ADMIN)
    assert status == 200, body
    assert gateway.config.listen == "127.0.0.1:7000"
    assert body["routes"]["r"]["migration"]["voicegateway_percent"] == 30


async def test_reload_gateway_directly(admin_factory: AdminFactory) -> None:
    """The function the SIGHUP handler calls does the same as the endpoint."""
    admin = await admin_factory(_doc())
    doc = _doc()
    doc["routes"]["r"]["async_mode"] = True
    admin.write(doc)
    state = reload_gateway(admin.gateway)
    assert admin.gateway.config is state.config
    assert admin.gateway.engine is state.engine
    assert admin.gateway.config.routes["r"].async_mode is True


async def test_a_reload_leaves_calls_in_flight_as_they_were(admin_factory: AdminFactory) -> None:
    async with LegacyEndpointSim(token="legacy-tok") as legacy:
        doc = _doc()
        doc["routes"]["r"] = {
            "token": "r-tok",
            "legacy": {"url": legacy.url(), "token": "legacy-tok"},
        }
        admin = await admin_factory(doc)

        async def post(path: str, body: dict[str, Any], token: str) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {token}"}
            async with admin.http.post(admin.url + path, json=body, headers=headers) as resp:
                return resp.status, await resp.json()

        async def turn(conversation: str, token: str, activity: dict[str, Any]) -> int:
            path = f"/ac/r/conversation/{conversation}/activities"
            body = {"conversation": conversation, "activities": [activity]}
            return (await post(path, body, token))[0]

        start = {"type": "event", "name": "start", "id": "a1", "parameters": {}}
        said = {"type": "message", "text": "hello", "id": "a2"}
        for conversation in ("c1", "c2"):
            assert (await post("/ac/r", {"conversation": conversation}, "r-tok"))[0] == 200
            assert await turn(conversation, "r-tok", start) == 200

        # the token rotates: the calls in flight take either token, new calls only the new one
        rotated = _doc()
        rotated["routes"]["r"] = {**doc["routes"]["r"], "token": "next-tok"}
        admin.write(rotated)
        assert (await admin.call("POST", "/admin/reload", ADMIN))[0] == 200
        assert await turn("c1", "r-tok", said) == 200
        assert await turn("c2", "next-tok", said) == 200
        assert await turn("c1", "wrong", {**said, "id": "a3"}) == 401
        assert (await post("/ac/r", {"conversation": "c3"}, "r-tok"))[0] == 401

        # the route goes: its calls in flight carry on to their end, no new call is taken
        gone = _doc()
        del gone["routes"]["r"]
        gone["routes"]["other"] = {"token": "o-tok", "legacy": {"url": legacy.url()}}
        admin.write(gone)
        assert (await admin.call("POST", "/admin/reload", ADMIN))[0] == 200
        assert await turn("c1", "r-tok", {**said, "id": "a4"}) == 200
        status, body = await post(
            "/ac/r/conversation/c1/disconnect", {"conversation": "c1"}, "r-tok"
        )
        assert status == 200, body
        assert (await post("/ac/r", {"conversation": "c4"}, "r-tok"))[0] == 404
        assert (await post("/ac/r/conversation/c1/activities", {}, "r-tok"))[0] == 404
    assert [len(call.turns) for call in legacy.calls.values()] == [3, 2]
