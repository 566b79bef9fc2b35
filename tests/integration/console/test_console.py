"""The web console in chromium: sign in, the runs list, a run's page with its charts, the samples
browser and its filters, a new run (a bad spec's field message, a good one, cancelled), a comparison,
another tenant's 404, and the API key never in a page or a URL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import Browser, Page, expect

from tests.integration.console.conftest import ALICE_KEY, BOB_KEY
from tests.integration.console.runs import failed_run, finished_run, many_samples, spec

KEYS = (ALICE_KEY, BOB_KEY)


def look(page: Page, folder: Path, name: str) -> None:
    """A screenshot of the page, and the check every page passes: no API key in its HTML or URL."""
    page.screenshot(path=folder / f"{name}.png", full_page=True)
    html = page.content()
    for key in KEYS:
        assert key not in html and key not in page.url, f"an API key in {name}"


def signed_in(browser: Browser, url: str, key: str) -> Page:
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(f"{url}/ui")
    expect(page).to_have_url(re.compile(r"/ui/login"))
    page.fill("#key", key)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Runs")
    cookie = next(c for c in page.context.cookies() if c["name"] == "gold_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert ALICE_KEY not in cookie["value"] and BOB_KEY not in cookie["value"]
    return page


@pytest.fixture
def runs(session_factory, console_settings) -> dict:
    gold = finished_run(session_factory, console_settings, owner="alice", name="sst2-gold")
    vanilla = finished_run(
        session_factory, console_settings, owner="alice", name="sst2-vanilla", feedback=False
    )
    failed = failed_run(session_factory, console_settings, owner="alice", name="sst2-failed")
    return {"gold": gold, "vanilla": vanilla, "failed": failed}


def test_browse_a_finished_run(browser, console_url, runs, screenshots):
    page = signed_in(browser, console_url, ALICE_KEY)
    rows = page.locator("table.runs tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text("sst2-failed")  # newest first
    look(page, screenshots, "runs-list")
    page.select_option("#status", "succeeded")
    page.click("form.filters button")
    expect(rows).to_have_count(2)

    page.click("text=sst2-gold")
    expect(page.locator("table.iterations tbody tr")).to_have_count(3)
    charts = page.locator("figure.chart img")
    expect(charts).to_have_count(5)
    page.wait_for_load_state("networkidle")
    assert all(width > 0 for width in charts.evaluate_all("imgs => imgs.map(i => i.naturalWidth)"))
    chart = f"{console_url}/ui/runs/{runs['gold']}/charts/energy.png"
    drawn = page.request.get(chart)
    assert drawn.status == 200 and drawn.headers["etag"]
    # the run has not changed since: the browser's copy is current, nothing is drawn again
    assert page.request.get(chart, headers={"If-None-Match": drawn.headers["etag"]}).status == 304
    expect(page.locator("pre.spec")).to_contain_text("feedback: true")
    look(page, screenshots, "run-page")

    page.click("text=Samples (")
    expect(page.locator("#total")).to_have_text("40")  # 2 iterations x (12 train + 6 OOD), 4 seeds
    page.select_option("#kind", "fed_back")
    page.click("form.filters button")
    expect(page.locator("#total")).to_have_text("4")
    page.click("text=samples generated from it >> nth=0")
    expect(page.locator(".provenance")).to_be_visible()
    expect(page.locator("#total")).to_have_text("12")  # iteration 2's training prompts showed it
    page.goto(f"{console_url}/ui/runs/{runs['gold']}/samples?agreement=disagrees&order=-energy")
    expect(page.locator("#total")).to_have_text("10")
    expect(page.locator("td.agreement").first).to_have_text("disagrees")
    energies = [float(e) for e in page.locator("table.samples tbody tr td:nth-child(8)").all_inner_texts()]
    assert energies == sorted(energies, reverse=True)
    look(page, screenshots, "samples")
    page.select_option("#kind", "rejected")
    page.click("form.filters button")
    expect(page.locator("table.samples")).to_contain_text("unparsable")

    page.goto(f"{console_url}/ui/runs/{runs['failed']}")
    failure = page.locator("section.failure")
    expect(failure).to_contain_text("The run failed in the generator")
    expect(failure).to_contain_text("connection refused")
    expect(failure).to_contain_text("GOLD_DEPENDENCY_PATIENCE_S")
    expect(page.locator("figure.chart")).to_have_count(0)
    look(page, screenshots, "failed-run")


def test_new_run_compare_and_tenants(browser, console_url, runs, screenshots):
    page = signed_in(browser, console_url, ALICE_KEY)
    page.click("text=New run")
    broken = spec("broken")
    broken["loop"]["samples_per_iteration"] = -5
    page.fill("#spec", yaml.safe_dump(broken))
    page.click("text=Submit run")
    errors = page.locator("#spec-errors")
    expect(errors.locator("code.field")).to_have_text("loop.samples_per_iteration")
    expect(errors).to_contain_text("greater than")
    look(page, screenshots, "new-run-error")

    page.fill("#spec", yaml.safe_dump(spec("from-the-console")))
    page.click("text=Submit run")
    expect(page.locator("h1")).to_have_text("from-the-console")
    expect(page.locator(".live .badge")).to_have_text("queued")
    page.click("text=Cancel run")
    expect(page.locator(".live .badge")).to_have_text("cancelled")

    page.goto(f"{console_url}/ui")
    page.check(f"input[value='{runs['gold']}']")
    page.check(f"input[value='{runs['vanilla']}']")
    page.click("text=Compare the ticked runs")
    expect(page.locator("table.compare tbody tr")).to_have_count(2)
    expect(page.locator("table.compare")).to_contain_text("vanilla")
    page.wait_for_load_state("networkidle")
    assert page.locator("figure.chart img").evaluate("i => i.naturalWidth") > 0
    look(page, screenshots, "compare")

    other = signed_in(browser, console_url, BOB_KEY)
    expect(other.locator("table.runs tbody tr")).to_have_count(1)  # "No runs"
    response = other.goto(f"{console_url}/ui/runs/{runs['gold']}")
    assert response is not None and response.status == 404
    expect(other.locator("h1")).to_have_text("Not found")
    look(other, screenshots, "other-tenant")
    other.click("text=Sign out")
    expect(other).to_have_url(re.compile(r"/ui/login"))
    other.goto(f"{console_url}/ui")
    expect(other).to_have_url(re.compile(r"/ui/login"))


def test_security_headers_and_csrf(console_url, browser, runs):
    page = signed_in(browser, console_url, ALICE_KEY)
    response = page.request.get(f"{console_url}/ui")
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "http" not in policy
    forged = page.request.post(f"{console_url}/ui/runs/{runs['gold']}/delete", form={"csrf": "forged"})
    assert forged.status == 403
    assert page.request.get(f"{console_url}/ui/runs/{runs['gold']}").status == 200


def test_page_load_of_a_large_run(browser, console_url, session_factory, console_settings, screenshots):
    """Loads of the run page and of a samples page for a run of 10,000 samples (printed)."""
    run_id = finished_run(session_factory, console_settings, owner="alice", name="large")
    many_samples(session_factory, run_id, 10_000 - 40)
    page = signed_in(browser, console_url, ALICE_KEY)
    timings = {}
    for name, path in (
        ("run page", f"/ui/runs/{run_id}"),
        ("samples page", f"/ui/runs/{run_id}/samples"),
        (
            "samples page, filtered and sorted by energy",
            f"/ui/runs/{run_id}/samples?agreement=disagrees&order=energy&page=3",
        ),
    ):
        page.goto(f"{console_url}{path}")  # warm: the first request pays for connections
        page.goto(f"{console_url}{path}", wait_until="load")
        # The page's HTML (DOMContentLoaded) and the page with its images, the charts (load).
        timings[name] = page.evaluate(
            "(() => { const n = performance.getEntriesByType('navigation')[0];"
            " return [n.domContentLoadedEventEnd, n.loadEventEnd]; })()"
        )
    expect(page.locator("#total")).not_to_have_text("0")
    look(page, screenshots, "samples-large")
    print(
        "page loads (HTML, with charts), 10,000-sample run:",
        {k: [f"{v:.0f} ms" for v in t] for k, t in timings.items()},
    )
    assert all(t[1] < 10_000 for t in timings.values())
