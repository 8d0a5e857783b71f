"""The item-flip view in a browser: the app's section under "Compare two runs", and the report's section."""

from __future__ import annotations

import pytest
from test_dashboard import _screenshot, browser, running_app  # noqa: F401  (a fixture)
from test_flips import A_TEXT, B_TEXT, make_runs

from peftbench.cli import main


@pytest.mark.browser
def test_app_shows_the_flipped_items_side_by_side(browser, tmp_path):  # noqa: F811
    task = make_runs(tmp_path)
    with running_app(str(task)) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        # runs A and B default to the first two runs: lora/a and lora/b
        status = page.locator("#flips-status")
        status.get_by_text("2 of 4 test items flipped: 1 right only in A, 1 right only in B").wait_for(
            timeout=60_000
        )
        table = page.locator("#flips-table")
        table.get_by_text(A_TEXT[2].strip()).first.wait_for(timeout=20_000)
        text = table.inner_text()
        for expected in (A_TEXT[1], B_TEXT[1], A_TEXT[2], B_TEXT[2], "A only", "B only"):
            assert expected.strip() in text
        # both completions of an item sit in one row, side by side
        row = table.locator("[role=row]", has_text="B only").first
        assert A_TEXT[2].strip() in row.inner_text() and B_TEXT[2].strip() in row.inner_text()
        _screenshot(page, tmp_path / "flips-app.png")


@pytest.mark.browser
def test_report_shows_the_flipped_items_offline(browser, tmp_path):  # noqa: F811
    task = make_runs(tmp_path)
    out = tmp_path / "report.html"
    assert main(["report", str(task), "-o", str(out), "--flips", "lora/a", "lora/b"]) == 0
    context = browser.new_context(offline=True)
    page = context.new_page()
    page.goto(out.as_uri())
    summary = page.locator("#flips-summary")
    assert summary.inner_text() == "2 of 4 test items flipped: 1 right only in A, 1 right only in B"
    rows = page.locator("table.flips tbody tr")
    assert rows.count() == 2
    cells = rows.nth(1).locator("td")
    assert [cells.nth(i).inner_text() for i in (0, 1, 2)] == ["2", "B only", "8"]
    assert cells.nth(4).inner_text().strip() == A_TEXT[2].strip()
    assert cells.nth(5).inner_text().strip() == B_TEXT[2].strip()
    # the prompt keeps its line break (pre-wrap): two lines
    assert cells.nth(3).inner_text().count("\n") == 1
    context.close()
