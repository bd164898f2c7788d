"""The page survives the network going away, a reload while offline, a server restart and
a proxy that refuses WebSockets — and every message arrives exactly once."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Page, WebSocketRoute, expect

from tests.browser.conftest import SignIn
from tests.browser.test_chat import create_session, say
from tests.server.harness import ServerProcess, fetch_events


async def badge_history(page: Page) -> list[str]:
    history: list[str] = await page.evaluate("window.tidingsBadgeHistory")
    return history


async def message_seqs(page: Page) -> list[int]:
    seqs: list[int] = await page.evaluate(
        "window.tidingsSession.getSnapshot().messages.map(m => m.seq)"
    )
    return seqs


async def user_messages(page: Page) -> list[str]:
    return await page.locator(".message[data-role=user] .content").all_inner_texts()


async def test_a_message_sent_offline_is_delivered_once_when_the_page_is_back_online(
    served: ServerProcess, sign_in: SignIn
) -> None:
    alice_context, alice = await sign_in(served.server, "alice")
    session = await create_session(alice, "Offline")
    await served.server.add_member("alice", session, "bob", "member")
    _, bob = await sign_in(served.server, "bob", path=f"/#{session}")

    await alice_context.set_offline(True)
    await expect(alice.locator("#badge")).to_have_attribute("data-state", "offline")
    await say(alice, "sent while offline")
    await expect(alice.locator(".message[data-status=pending] .content")).to_have_text(
        ["sent while offline"]
    )
    await alice_context.set_offline(False)
    for page in (alice, bob):
        await expect(page.locator(".message[data-role=assistant] .content")).to_have_text(
            ["echo: sent while offline"]
        )
        assert await user_messages(page) == ["sent while offline"]
    assert (await badge_history(alice))[-4:] == [
        "connected",
        "offline",
        "reconnecting",
        "connected",
    ]
    stored = [e for e in await fetch_events(served.server, "alice", session)]
    assert [
        e["data"]["message"]["content"]
        for e in stored
        if e["author"] == "alice" and e["kind"] == "message.created"
    ] == ["sent while offline"]


async def test_a_reload_while_offline_keeps_the_unsent_message_and_delivers_it_once(
    served: ServerProcess, sign_in: SignIn
) -> None:
    context, alice = await sign_in(served.server, "alice")
    session = await create_session(alice, "Reload")
    # The service worker must hold the app shell before the network goes.
    await alice.wait_for_function(
        "navigator.serviceWorker.controller !== null || "
        "navigator.serviceWorker.ready.then(() => true)"
    )
    await alice.reload()
    await alice.wait_for_function("navigator.serviceWorker.controller !== null")
    await expect(alice.locator("#badge")).to_have_attribute("data-state", "connected")

    await context.set_offline(True)
    await expect(alice.locator("#badge")).to_have_attribute("data-state", "offline")
    await say(alice, "queued across a reload")
    await expect(alice.locator(".message[data-status=pending] .content")).to_have_text(
        ["queued across a reload"]
    )
    await alice.reload()
    await alice.wait_for_selector("body[data-ready=true]")
    await expect(alice.locator(".message[data-status=pending] .content")).to_have_text(
        ["queued across a reload"]
    )
    await context.set_offline(False)
    await expect(alice.locator(".message[data-role=assistant] .content")).to_have_text(
        ["echo: queued across a reload"]
    )
    assert await user_messages(alice) == ["queued across a reload"]
    stored = await fetch_events(served.server, "alice", session)
    created = [e for e in stored if e["kind"] == "message.created" and e["author"] == "alice"]
    assert len(created) == 1


async def test_the_page_resumes_with_no_gap_after_the_server_restarts(
    served: ServerProcess, sign_in: SignIn
) -> None:
    _, alice = await sign_in(served.server, "alice")
    await create_session(alice, "Restart")
    await say(alice, "before the restart")
    await expect(alice.locator(".message[data-role=assistant] .content")).to_have_text(
        ["echo: before the restart"]
    )
    served.kill()
    await served.wait()
    await expect(alice.locator("#badge")).to_have_attribute("data-state", "reconnecting")
    await served.start()
    await expect(alice.locator("#badge")).to_have_attribute("data-state", "connected")
    await say(alice, "after the restart")
    await expect(alice.locator(".message[data-role=assistant] .content")).to_have_text(
        ["echo: before the restart", "echo: after the restart"]
    )
    seq: int = await alice.evaluate("window.tidingsSession.getSnapshot().seq")
    stored = await fetch_events(
        served.server, "alice", await alice.evaluate("window.tidingsSession.id")
    )
    assert seq == stored[-1]["seq"]
    seqs = await message_seqs(alice)
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    assert await alice.evaluate("window.tidingsSession.replica.gap") is None


async def test_a_websocket_refused_by_a_proxy_falls_back_to_http_and_keeps_chatting(
    served: ServerProcess, sign_in: SignIn, browser: Any
) -> None:
    _, alice = await sign_in(served.server, "alice")
    session = await create_session(alice, "Fallback")
    await served.server.add_member("alice", session, "bob", "member")

    bob_context = await browser.new_context()

    async def refuse(ws: WebSocketRoute) -> None:
        await ws.close(code=1008, reason="WebSockets are not allowed here")

    bob = await bob_context.new_page()
    await bob.route_web_socket("**/v1/ws", refuse)
    await bob.goto(served.server.http_url + f"/#{session}")
    await bob.wait_for_selector("body[data-ready=true]")
    await bob.fill("#dev-name", "bob")
    await bob.click("#dev-form button[type=submit]")
    await expect(bob.locator("#badge")).to_have_attribute("data-state", "fallback")
    await expect(bob.locator("#chat-title")).to_have_text("Fallback")

    await say(bob, "over plain HTTP")
    await say(alice, "over the WebSocket")
    for page in (alice, bob):
        await expect(page.locator(".message[data-role=user] .content")).to_have_text(
            ["over plain HTTP", "over the WebSocket"]
        )
        await expect(page.locator(".message[data-role=assistant] .content")).to_have_text(
            ["echo: over plain HTTP", "echo: over the WebSocket"]
        )
