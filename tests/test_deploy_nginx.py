"""The shipped nginx file (deploy/nginx/acvg-bridge.conf), run by a real nginx in front of three
test upstreams: stickiness per conversation id, consistent hashing, retries, headers, sockets."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.sim.nginx_server import Nginx, check_conf, render_conf, running_nginx
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


class NginxFleet(Fleet[Nginx]):
    @property
    def nginx(self) -> Nginx:
        return self.proxy


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[NginxFleet]:
    async with running_upstreams(Upstream(i) for i in range(3)) as upstreams:
        with running_nginx(tmp_path, [u.address for u in upstreams]) as nginx:
            async with client_session() as http:
                yield NginxFleet(upstreams, nginx, http)


def test_rendered_conf_passes_nginx_t() -> None:
    rendered = render_conf(["127.0.0.1:18081", "127.0.0.1:18082"], "127.0.0.1:18080")
    directives = "".join(line.split("#")[0] for line in rendered.splitlines())
    assert "@" not in directives.replace("@acvg_socket", "")
    assert "listen 127.0.0.1:18080;" in rendered
    assert "server 127.0.0.1:18082 max_fails=1 fail_timeout=1s;" in rendered
    check_conf(rendered)
    with pytest.raises(RuntimeError, match="no servers are inside upstream"):
        check_conf(rendered.replace("server 127.0.0.1:", "# server 127.0.0.1:"))


def test_render_refuses_a_template_without_placeholders() -> None:
    shipped = render_conf(["127.0.0.1:1"], "@listen@")
    with pytest.raises(ValueError, match="@upstreams@"):
        render_conf(["127.0.0.1:1"], "127.0.0.1:2", template=shipped)
    template = render_conf(["127.0.0.1:1"], "127.0.0.1:2").replace(
        "        server 127.0.0.1:1 max_fails=1 fail_timeout=1s;\n", "    # @upstreams@\n"
    )
    with pytest.raises(ValueError, match="@listen@"):
        render_conf(["127.0.0.1:1"], "127.0.0.1:2", template=template)


async def test_a_conversation_sticks_to_one_instance_and_ids_spread(fleet: NginxFleet) -> None:
    convs = random_ids(50)

    async def instances_of(conv: str) -> set[int]:
        ops = ("activities", "refresh", "disconnect")
        answers = [await fleet.post(fleet.conversation(conv, op)) for op in ops]
        socket = await fleet.socket_instance(fleet.conversation(conv, "websocket"))
        return {a["instance"] for a in answers} | {socket}

    seen = await asyncio.gather(*(instances_of(c) for c in convs))
    for conv, instances in zip(convs, seen, strict=True):
        assert len(instances) == 1, (conv, instances)
    spread = Counter(next(iter(s)) for s in seen)
    assert set(spread) == {0, 1, 2}, spread


async def test_losing_an_instance_moves_only_its_conversations(fleet: NginxFleet) -> None:
    convs = random_ids(60)
    before = await fleet.placement(convs)
    lost = Counter(before.values()).most_common()[-1][0]
    await fleet.upstreams[lost].stop()

    after = await fleet.placement(convs)
    again = await fleet.placement(convs)
    assert after == again
    assert_only_the_lost_moved(before, after, lost)


@pytest.mark.parametrize("failure", ["stopped", "hangs_up_after_reading"])
async def test_a_post_to_a_failed_instance_is_retried_on_another(
    fleet: NginxFleet, failure: str
) -> None:
    convs = random_ids(30)
    before = await fleet.placement(convs)
    victim = before[convs[0]]
    if failure == "stopped":
        await fleet.upstreams[victim].stop()
    else:
        # The request reaches the instance before it fails: only `non_idempotent` lets nginx
        # send a POST on then (without it nginx answers 502).
        fleet.upstreams[victim].hang_up = True
    url = fleet.conversation(convs[0], "activities")
    answer = await fleet.post(url, data=b'{"activities": [{"id": "a1"}]}')
    assert answer["instance"] != victim
    assert answer["body"] == '{"activities": [{"id": "a1"}]}'
    if failure == "stopped":
        assert "connect() failed" in fleet.nginx.error_log()
    else:
        tried = f"POST {ROUTE}/conversation/{convs[0]}/activities"
        assert fleet.upstreams[victim].seen.count(tried) == 1
        assert "prematurely closed" in fleet.nginx.error_log()


async def test_a_503_is_answered_not_retried(fleet: NginxFleet) -> None:
    # a 503 would count against the instance (max_fails): nginx passes it on to VAIC instead
    await check_a_503_is_answered_not_retried(fleet)


async def test_authorization_body_and_forwarding_headers_reach_the_upstream(
    fleet: NginxFleet,
) -> None:
    answer = await check_headers_reach_the_upstream(fleet)
    assert answer["host"] == "127.0.0.1"


async def test_plain_requests_reuse_upstream_connections(fleet: NginxFleet) -> None:
    # One cached connection per nginx worker at most; without keepalive, one per request.
    await check_requests_reuse_connections(fleet, most=4)


async def test_websocket_mode_upgrade_echoes_both_ways(fleet: NginxFleet) -> None:
    await check_websocket_echoes_both_ways(fleet)


async def test_requests_without_a_conversation_id_spread(fleet: NginxFleet) -> None:
    probes = [await fleet.get(f"{fleet.nginx.url}{ROUTE}") for _ in range(30)]
    creates = [await fleet.post(f"{fleet.nginx.url}{ROUTE}") for _ in range(30)]
    assert len({p["instance"] for p in probes}) > 1
    assert len({c["instance"] for c in creates}) > 1
    assert {p["method"] for p in probes} == {"GET"}


async def test_health_location_answers_without_an_upstream(fleet: NginxFleet) -> None:
    for upstream in fleet.upstreams:
        await upstream.stop()
    async with fleet.http.get(f"{fleet.nginx.url}/nginx-health") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}
