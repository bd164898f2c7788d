"""Two people chat in Chromium through the UI at `/`, with the echo assistant."""

from __future__ import annotations

from playwright.async_api import Page, expect

from tests.browser.conftest import SignIn, artifact
from tests.server.harness import ServerProcess


async def create_session(page: Page, title: str) -> str:
    await page.fill("#create-title", title)
    await page.click("#create-form button[type=submit]")
    await expect(page.locator("#chat-title")).to_have_text(title)
    session_id: str = await page.evaluate("window.tidingsSession.id")
    return session_id


async def say(page: Page, text: str) -> None:
    await page.fill("#message-input", text)
    await page.press("#message-input", "Enter")


def message(page: Page, text: str) -> object:
    return page.locator("#messages .message .content", has_text=text)


async def test_two_people_see_each_others_messages_and_the_reply_stream_in(
    served: ServerProcess, sign_in: SignIn
) -> None:
    _, alice = await sign_in(served.server, "alice")
    session = await create_session(alice, "Plans")
    await served.server.add_member("alice", session, "bob", "member")
    _, bob = await sign_in(served.server, "bob", path=f"/#{session}")
    await expect(bob.locator("#chat-title")).to_have_text("Plans")

    await say(alice, "hello from alice")
    for page in (alice, bob):
        await expect(page.locator(".message[data-role=user] .content")).to_have_text(
            ["hello from alice"]
        )
        await expect(page.locator(".message[data-role=assistant] .content")).to_have_text(
            ["echo: hello from alice"]
        )
    await say(bob, "and bob answers")
    await expect(alice.locator(".message[data-role=user] .content")).to_have_text(
        ["hello from alice", "and bob answers"]
    )
    await alice.screenshot(path=artifact("chat-desktop.png"), full_page=True)


async def test_typing_and_presence_show_to_the_other_person(
    served: ServerProcess, sign_in: SignIn
) -> None:
    _, alice = await sign_in(served.server, "alice")
    session = await create_session(alice, "Typing")
    await served.server.add_member("alice", session, "bob", "member")
    _, bob = await sign_in(served.server, "bob", path=f"/#{session}")
    await expect(alice.locator("#members li[data-user=bob]")).to_have_attribute(
        "data-online", "true"
    )
    await bob.type("#message-input", "thinking")
    await expect(alice.locator("#typing")).to_have_text("bob is typing…")
    await bob.close()
    await expect(alice.locator("#members li[data-user=bob]")).to_have_attribute(
        "data-online", "false"
    )


async def test_a_message_with_markup_renders_as_text_and_runs_nothing(
    served: ServerProcess, sign_in: SignIn
) -> None:
    _, alice = await sign_in(served.server, "alice")
    await create_session(alice, "XSS")
    dialogs: list[str] = []
    alice.on("dialog", lambda dialog: dialogs.append(dialog.message))
    payload = "<img src=x onerror=alert(1)>"
    await say(alice, payload)
    await expect(alice.locator(".message[data-role=user] .content")).to_have_text([payload])
    await expect(alice.locator(".message[data-role=assistant] .content")).to_have_text(
        [f"echo: {payload}"]
    )
    assert await alice.locator("#messages img").count() == 0
    assert dialogs == []


async def test_the_main_view_is_readable_at_phone_width(
    served: ServerProcess, sign_in: SignIn
) -> None:
    _, phone = await sign_in(served.server, "alice", viewport={"width": 390, "height": 844})
    await create_session(phone, "On the go")
    await say(phone, "small screen")
    await expect(phone.locator(".message[data-role=assistant] .content")).to_have_text(
        ["echo: small screen"]
    )
    width = await phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways at phone width ({width}px)"
    await phone.screenshot(path=artifact("chat-phone.png"), full_page=True)
