"""The shipped HAProxy file (deploy/haproxy/acvg-bridge.cfg), run by a real HAProxy in front of
three test upstreams: stickiness per conversation id (creates by the id in their body),
consistent hashing, retries, health checks on /readyz, headers, sockets."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urljoin

import pytest

from bridge.app import GatewayKey
from bridge.sim.haproxy_server import (
    SHIPPED_CONF,
    HAProxy,
    check_conf,
    render_conf,
    running_haproxy,
)
from tests.conftest import BridgeFactory, route_config
from tests.proxy_stage import (
    ROUTE,
    Fleet,
    Upstream,
    assert_only_the_lost_moved,
    check_a_503_is_answered_not_retried,
    check_headers_reach_the_upstream,
    check_requests_reuse_connections,
    check_websocket_echoes_both_ways,
    client_session,
    random_ids,
    running_upstreams,
)


def upstreams_of(n: int) -> list[Upstream]:
    return [Upstream(i, join_forwarded_for=True) for i in range(n)]


class HAProxyFleet(Fleet[HAProxy]):
    @property
    def haproxy(self) -> HAProxy:
        return self.proxy

    async def create(self, conv: str, *, ascii_only: bool = False) -> int:
        body = json.dumps({"conversation": conv, "id": "x"}, ensure_ascii=ascii_only)
        answer = await self.post(f"{self.haproxy.url}{ROUTE}", data=body.encode())
        instance: int = answer["instance"]
        return instance

    async def wait_until(self, upstream: Upstream, state: str, timeout_s: float = 5.0) -> None:
        """Until HAProxy has said that `upstream` went `state` (UP, DOWN)."""
        deadline = time.monotonic() + timeout_s
        while self.haproxy.state_changes(upstream.address, state) < 1:
            assert time.monotonic() < deadline, (upstream, state, self.haproxy.error_log())
            await asyncio.sleep(0.05)


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[HAProxyFleet]:
    async with running_upstreams(upstreams_of(3)) as upstreams:
        with running_haproxy(tmp_path, [u.address for u in upstreams]) as haproxy:
            async with client_session() as http:
                yield HAProxyFleet(upstreams, haproxy, http)


def test_rendered_conf_passes_haproxy_c() -> None:
    rendered = render_conf(["127.0.0.1:18081", "127.0.0.1:18082"], "127.0.0.1:18080")
    directives = "".join(line.split("#")[0] for line in rendered.splitlines())
    assert "@" not in directives
    assert "    bind 127.0.0.1:18080\n" in rendered
    assert "    server 127.0.0.1:18082 127.0.0.1:18082 id 2\n" in rendered
    check_conf(rendered)
    with pytest.raises(RuntimeError, match="custom id 1 already used"):
        check_conf(rendered.replace(" id 2\n", " id 1\n"))


def test_render_refuses_a_template_without_placeholders_or_bad_ids() -> None:
    shipped = render_conf(["127.0.0.1:1"], "@listen@")
    with pytest.raises(ValueError, match="@upstreams@"):
        render_conf(["127.0.0.1:1"], "127.0.0.1:2", template=shipped)
    template = render_conf(["127.0.0.1:1"], "127.0.0.1:2").replace(
        "    server 127.0.0.1:1 127.0.0.1:1 id 1\n", "    # @upstreams@\n"
    )
    with pytest.raises(ValueError, match="@listen@"):
        render_conf(["127.0.0.1:1"], "127.0.0.1:2", template=template)
    with pytest.raises(ValueError, match="2 upstreams but 1 ids"):
        render_conf(["127.0.0.1:1", "127.0.0.1:3"], "127.0.0.1:2", ids=[4])
    with pytest.raises(ValueError, match="distinct positive"):
        render_conf(["127.0.0.1:1", "127.0.0.1:3"], "127.0.0.1:2", ids=[4, 4])


async def test_a_conversation_sticks_to_one_instance_and_ids_spread(fleet: HAProxyFleet) -> None:
    convs = random_ids(50)

    async def instances_of(conv: str) -> set[int]:
        created = await fleet.create(conv)
        ops = ("activities", "refresh", "disconnect")
        answers = [await fleet.post(fleet.conversation(conv, op)) for op in ops]
        socket = await fleet.socket_instance(fleet.conversation(conv, "websocket"))
        return {created, socket} | {a["instance"] for a in answers}

    seen = await asyncio.gather(*(instances_of(c) for c in convs))
    for conv, instances in zip(convs, seen, strict=True):
        assert len(instances) == 1, (conv, instances)
    spread = Counter(next(iter(s)) for s in seen)
    assert set(spread) == {0, 1, 2}, spread
    assert min(spread.values()) >= 5, spread


async def test_a_create_hashes_like_the_percent_encoded_id_in_later_paths(
    fleet: HAProxyFleet,
) -> None:
    # the path carries the id percent-encoded (UTF-8), the create body as JSON text
    convs = [f"{c} /ä+%é" for c in random_ids(20)]
    placed = await fleet.placement(convs)
    assert len(set(placed.values())) > 1
    for conv in convs:
        assert await fleet.create(conv) == placed[conv], conv
    # \u-escaped non-ASCII is not decoded to UTF-8 by json_query: such a create is still
    # served, where the hash of the escaped text puts it (VAIC's ids are UUIDs)
    for conv in convs:
        assert await fleet.create(conv, ascii_only=True) in {0, 1, 2}


async def test_a_create_without_an_id_is_spread(fleet: HAProxyFleet) -> None:
    bodies = [b"", b"not json", b'{"other": "x"}']
    for body in bodies:
        instances = {
            (await fleet.post(f"{fleet.haproxy.url}{ROUTE}", data=body))["instance"]
            for _ in range(9)
        }
        assert len(instances) > 1, body


async def test_losing_an_instance_moves_only_its_conversations(fleet: HAProxyFleet) -> None:
    convs = random_ids(60)
    before = await fleet.placement(convs)
    lost = Counter(before.values()).most_common()[-1][0]
    victim = fleet.upstreams[lost]
    await victim.stop()
    # out of the ring: a refused connection takes it off at once, the checks confirm it
    await fleet.placement(convs)
    await fleet.wait_until(victim, "DOWN")

    after = await fleet.placement(convs)
    again = await fleet.placement(convs)
    assert after == again
    assert_only_the_lost_moved(before, after, lost)


async def test_removing_an_instance_from_the_list_moves_only_its_conversations(
    tmp_path: Path,
) -> None:
    # the ring is built from the server ids: instance 2 leaving the list keeps 1's and 3's places
    convs = random_ids(60)
    placements: list[dict[str, int]] = []
    async with running_upstreams(upstreams_of(3)) as upstreams, client_session() as http:
        for name, kept in (("three", [0, 1, 2]), ("two", [0, 2])):
            addresses = [upstreams[i].address for i in kept]
            ids = [i + 1 for i in kept]
            with running_haproxy(tmp_path / name, addresses, ids=ids) as haproxy:
                fleet = HAProxyFleet(upstreams, haproxy, http)
                placements.append(await fleet.placement(convs))
    before, after = placements
    assert 1 in before.values()
    for conv in convs:
        if before[conv] == 1:
            assert after[conv] in {0, 2}
        else:
            assert after[conv] == before[conv], conv


@pytest.mark.parametrize("failure", ["stopped", "hangs_up_after_reading"])
async def test_a_post_to_a_failed_instance_is_retried_on_another(
    fleet: HAProxyFleet, failure: str
) -> None:
    convs = random_ids(30)
    before = await fleet.placement(convs)
    victim = before[convs[0]]
    if failure == "stopped":
        await fleet.upstreams[victim].stop()
    else:
        # The request reaches the instance before it fails (empty-response): HAProxy sends the
        # POST on to another instance all the same.
        fleet.upstreams[victim].hang_up = True
    url = fleet.conversation(convs[0], "activities")
    started_at = time.monotonic()
    answer = await fleet.post(url, data=b'{"activities": [{"id": "a1"}]}')
    assert time.monotonic() - started_at < 2.5
    assert answer["instance"] != victim
    assert answer["body"] == '{"activities": [{"id": "a1"}]}'
    if failure == "stopped":
        # a refused connection takes the instance off the ring at once (observe layer4)
        await fleet.wait_until(fleet.upstreams[victim], "DOWN", 0.5)
    else:
        tried = f"POST {ROUTE}/conversation/{convs[0]}/activities"
        assert fleet.upstreams[victim].seen.count(tried) == 1


async def test_a_hung_instance_is_left_after_the_server_timeout(tmp_path: Path) -> None:
    # the shipped file with a 1 s server timeout instead of 30 s: retry-on response-timeout
    template = SHIPPED_CONF.read_text().replace("timeout server 30s", "timeout server 1s")
    assert template != SHIPPED_CONF.read_text()
    async with running_upstreams(upstreams_of(3)) as upstreams:
        with running_haproxy(tmp_path, [u.address for u in upstreams], template=template) as ha:
            async with client_session() as http:
                fleet = HAProxyFleet(upstreams, ha, http)
                conv = random_ids(1)[0]
                victim = (await fleet.placement([conv]))[conv]
                upstreams[victim].delay_s = 5.0
                answer = await fleet.post(fleet.conversation(conv, "activities"), data=b"{}")
    assert answer["instance"] != victim
    assert upstreams[victim].seen.count(f"POST {ROUTE}/conversation/{conv}/activities") == 1


async def test_a_503_is_answered_not_retried(fleet: HAProxyFleet) -> None:
    # while Redis is down every instance may answer 503: passed on to VAIC, which retries
    await check_a_503_is_answered_not_retried(fleet)


async def test_a_draining_instance_leaves_the_ring_and_comes_back(fleet: HAProxyFleet) -> None:
    convs = random_ids(60)
    before = await fleet.placement(convs)
    drained = fleet.upstreams[Counter(before.values()).most_common()[-1][0]]
    drained.ready = False
    await fleet.wait_until(drained, "DOWN")
    during = await fleet.placement(convs)
    for conv in convs:
        if before[conv] == drained.instance:
            assert during[conv] != drained.instance
        else:
            assert during[conv] == before[conv], conv

    drained.ready = True
    await fleet.wait_until(drained, "UP")
    assert await fleet.placement(convs) == before
    assert drained.checks >= 2  # at least one check failed, one passed


async def test_authorization_body_and_forwarding_headers_reach_the_upstream(
    fleet: HAProxyFleet,
) -> None:
    answer = await check_headers_reach_the_upstream(fleet)
    assert answer["host"] == f"127.0.0.1:{fleet.haproxy.port}"


async def test_plain_requests_reuse_upstream_connections(fleet: HAProxyFleet) -> None:
    # A few idle server connections at most (HAProxy keeps them per thread); one per request
    # without reuse.
    await check_requests_reuse_connections(fleet, most=4)


async def test_websocket_mode_upgrade_echoes_both_ways(fleet: HAProxyFleet) -> None:
    await check_websocket_echoes_both_ways(fleet)
    instances = {await fleet.socket_instance(f"{fleet.haproxy.url}{ROUTE}") for _ in range(9)}
    assert len(instances) > 1


async def test_requests_without_a_conversation_id_spread(fleet: HAProxyFleet) -> None:
    probes = [await fleet.get(f"{fleet.haproxy.url}{ROUTE}") for _ in range(30)]
    assert len({p["instance"] for p in probes}) > 1
    assert {p["method"] for p in probes} == {"GET"}


async def test_health_location_answers_without_an_upstream(fleet: HAProxyFleet) -> None:
    for upstream in fleet.upstreams:
        await upstream.stop()
    async with fleet.http.get(f"{fleet.haproxy.url}/haproxy-health") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert await resp.json() == {"status": "ok"}


async def test_real_bridges_find_each_create_by_its_body_id(
    tmp_path: Path, bridge_factory: BridgeFactory
) -> None:
    # Three bridges without Redis, each knowing only its own calls: a refresh succeeds only on
    # the instance that got the create. The real /readyz keeps every one in the ring.
    bridges = [await bridge_factory(route_config("ws://127.0.0.1:1/unused")) for _ in range(3)]
    addresses = [b.url.removeprefix("http://") for b in bridges]
    auth = {"Authorization": "Bearer tok"}
    convs = [str(uuid.uuid4()) for _ in range(30)]
    with running_haproxy(tmp_path, addresses) as haproxy:
        async with client_session(headers=auth) as http:
            async with http.get(f"{haproxy.url}{ROUTE}") as resp:
                assert await resp.json() == {"type": "ac-bot-api", "success": True}
            for conv in convs:
                async with http.post(f"{haproxy.url}{ROUTE}", json={"conversation": conv}) as resp:
                    assert resp.status == 200, await resp.text()
                    created = await resp.json()
                refresh = urljoin(f"{haproxy.url}{ROUTE}", created["refreshURL"])
                async with http.post(refresh, json={"conversation": conv}) as resp:
                    assert resp.status == 200, (conv, await resp.text())
            await asyncio.sleep(1.2)  # a health check round on /readyz
        assert "is DOWN" not in haproxy.error_log()
    calls = [len(b.app[GatewayKey].calls) for b in bridges]
    assert sum(calls) == 30 and min(calls) > 0, calls
