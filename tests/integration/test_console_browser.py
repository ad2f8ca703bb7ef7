"""The web console in a real browser: Playwright driving Debian's chromium. Two
organisations sign in and each sees only its own clients; screenshots are kept in
test-artifacts/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from services.hub import RunningHub
from tests.conftest import ARTIFACTS
from tests.integration.helpers import OPERATOR_TOKEN, send_referral, token

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HAVE_CHROMIUM = Path(CHROMIUM).exists()
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser() -> Browser:  # type: ignore[misc]
    if not HAVE_CHROMIUM:
        pytest.fail(
            "Debian's chromium is needed for the console test: apt-get install chromium (dev.py test does it)"
        )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=ARGS, headless=True
        )
        yield browser
        await browser.close()


async def _sign_in(browser: Browser, hub: RunningHub, secret: str):  # type: ignore[no-untyped-def]
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{hub.http_url}/console")
    assert page.url.endswith("/console/login"), "unauthenticated visitors are sent to sign in"
    await page.fill("input[name=token]", secret)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{hub.http_url}/console")
    return context, page


async def test_each_organisation_sees_only_its_own_clients(
    hub: RunningHub, browser: Browser
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    context, page = await _sign_in(browser, hub, token("welzijn-hoogeveen"))
    assert await page.text_content("#who") == "Welzijn De Schakel Hoogeveen"
    table = await page.text_content("#registrations")
    assert "Anna de Vries-Bakker" in table
    assert "Bram Bos" not in table and "Cor Claassen" not in table
    await page.screenshot(path=str(ARTIFACTS / "console-welzijn-hoogeveen.png"), full_page=True)
    await page.click("text=Anna de Vries-Bakker")
    await page.wait_for_selector("#timeline")
    timeline = await page.text_content("#timeline")
    assert "received" in timeline and "released" in timeline
    await page.screenshot(path=str(ARTIFACTS / "console-registration.png"), full_page=True)
    # another organisation's registration by URL: not found
    others = hub.hub.store.registration_of_referral("VERW-B")
    response = await page.goto(f"{hub.http_url}/console/registrations/{others.registration_id}")
    assert response.status == 404
    await context.close()

    context, page = await _sign_in(browser, hub, token("welzijn-de-wolden"))
    assert await page.text_content("#who") == "Stichting Welzijn De Wolden"
    table = await page.text_content("#registrations")
    assert "Bram Bos" in table
    assert "Anna de Vries-Bakker" not in table
    await page.screenshot(path=str(ARTIFACTS / "console-welzijn-de-wolden.png"), full_page=True)
    await context.close()


async def test_operator_sees_dead_letters_and_wrong_tokens_are_refused(
    hub: RunningHub, browser: Browser
) -> None:
    await send_referral(hub, "VERW-BAD-UI", bsn="123456789")
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{hub.http_url}/console/login")
    await page.fill("input[name=token]", "not-a-token")
    await page.click("button[type=submit]")
    assert "Onbekend token" in await page.text_content("[role=alert]")
    await context.close()

    context, page = await _sign_in(browser, hub, OPERATOR_TOKEN)
    for _ in range(50):
        await hub.relay.publish_pending()
        await page.goto(f"{hub.http_url}/console/dead-letters")
        if await page.query_selector("#dead-letters"):
            break
    text = await page.text_content("#dead-letters")
    assert "invalid-bsn" in text and "VERW-BAD-UI" in text
    assert "123456789" not in (await page.content())
    await page.screenshot(path=str(ARTIFACTS / "console-dead-letters.png"), full_page=True)
    await context.close()
