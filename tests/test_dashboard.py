"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against the real API serving
the built dashboard over a warehouse made from the tiny shop. Each test asserts what a person sees; the
screenshots land in test-artifacts/dashboard/."""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from urllib.parse import quote

import duckdb
import polars as pl
import pytest
from playwright.sync_api import Browser, Page, expect

from conftest import (AWKWARD_PRODUCTS, PROJECT_ROOT, add_awkward_ids, api_server, chromium, materialize_all,
                      write_tiny_shop)

SCREENSHOTS = PROJECT_ROOT / "test-artifacts" / "dashboard"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
KEY = "dashboard-test-key"
PLANTED = 'Trail Running Shoe Summit <img src=x onerror="window.__xss=1">'
PER_PAGE = 4

BUILD = PROJECT_ROOT / "dashboard" / "dist"
BUDGET_KB = 300


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """The tiny shop with markup planted in a title, ids with slashes, quotes and spaces, an API key, and 4
    cards a page."""
    shop = write_tiny_shop(tmp_path_factory.mktemp("dashboard"))
    add_awkward_ids(shop)
    products = pl.read_csv(shop.input_dir / "products.csv")
    products.with_columns(title=pl.when(pl.col("product_id") == "T03").then(pl.lit(PLANTED))
                          .otherwise(pl.col("title"))).write_csv(shop.input_dir / "products.csv")
    shop.write_config({"api": {"api_key": KEY}, "frontend": {"items_per_page": PER_PAGE}}, top_k=10)
    assert materialize_all(shop.config_path).success
    return shop


@pytest.fixture(scope="module")
def api(shop):
    assert (BUILD / "index.html").is_file(), "the dashboard is not built: `make test` (or `make dashboard`) builds it"
    with api_server(shop.config_path) as url:
        yield url


@pytest.fixture(scope="module")
def sample_api(sample_run):
    assert sample_run.result.success
    with api_server(sample_run.config_path) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser):
    context = browser.new_context(viewport=DESKTOP, permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"the page threw: {errors}"


def published(warehouse, sql: str, *params) -> list[tuple]:
    """What the warehouse holds: the truth the page is checked against."""
    with duckdb.connect(str(getattr(warehouse, "warehouse", warehouse)), read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()


def show_user(page: Page, api: str, user_id: str, key: str = KEY) -> None:
    """What a person does: open the dashboard, enter the key and a user id, press Show."""
    page.goto(api)
    page.get_by_label("API key").fill(key)
    page.get_by_label("User ID").fill(user_id)
    page.get_by_role("button", name="Show").click()


def cards(page: Page):
    return page.get_by_test_id("recommendation-card")


def test_a_user_sees_their_list_page_by_page_with_its_freshness(page, api, shop):
    show_user(page, api, "U_TRAIL")
    expect(cards(page)).to_have_count(PER_PAGE)
    expected = published(shop, "SELECT r.rank, p.title FROM recommendations r JOIN products p USING (product_id) "
                               "WHERE user_id = 'U_TRAIL' ORDER BY rank")
    assert len(expected) == 10
    titles = [t for _, t in expected]
    expect(cards(page).get_by_role("heading")).to_have_text(titles[:PER_PAGE])
    expect(cards(page).first).to_contain_text("#1")
    expect(page.get_by_test_id("list-summary")).to_have_text("10 recommendations, page 1 of 3")
    run_id, = published(shop, "SELECT run_id FROM runs WHERE status = 'success'")[0]
    expect(page.get_by_test_id("freshness")).to_contain_text(f"run {run_id[:8]}")
    expect(page.get_by_test_id("freshness")).to_contain_text(re.compile(r"Computed (just now|\d+ minutes? ago)"))
    # three columns on a desktop: the first row's cards sit side by side
    lefts = [cards(page).nth(i).bounding_box()["x"] for i in range(3)]
    assert lefts[0] < lefts[1] < lefts[2]
    page.screenshot(path=SCREENSHOTS / "desktop-list.png", full_page=True)

    page.get_by_role("button", name="Page 2").click()
    expect(cards(page).get_by_role("heading")).to_have_text(titles[PER_PAGE:2 * PER_PAGE])
    page.get_by_role("button", name="Next").click()
    expect(cards(page).get_by_role("heading")).to_have_text(titles[2 * PER_PAGE:])
    expect(page.get_by_role("button", name="Next")).to_be_disabled()


def test_first_render_of_a_list_is_measured(page, api):
    """Printed, not asserted: from page load, and from pressing Show, to the list on screen."""
    page.goto(f"{api}/#/")
    page.evaluate(f"localStorage.setItem('shoprec.apiKey', '{KEY}')")
    page.goto(f"{api}/#/users/U_TRAIL")
    page.reload()
    expect(cards(page).first).to_be_visible()
    from_load = page.evaluate("performance.getEntriesByName('shoprec:list-rendered').at(-1).startTime")
    page.get_by_label("User ID").fill("U_COOK")
    started = page.evaluate("performance.now()")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("heading", name="Recommendations for U_COOK")).to_be_visible()
    expect(cards(page).first).to_be_visible()
    from_show = page.evaluate("performance.getEntriesByName('shoprec:list-rendered').at(-1).startTime") - started
    print(f"\nfirst render of a user's list: {from_load:.0f} ms from page load, {from_show:.0f} ms from Show")
    assert from_load > 0 and from_show > 0


def test_why_this_recommendation_expands_into_the_explanation_and_its_evidence(page, api, shop):
    show_user(page, api, "U_TRAIL")
    first = cards(page).first
    product_id = first.get_attribute("data-product-id")
    explanation, factors, evidence = published(
        shop, "SELECT e.explanation, e.reasoning_factors, r.evidence_product_ids FROM explanations e "
              "JOIN recommendations r USING (user_id, product_id) WHERE user_id = 'U_TRAIL' AND product_id = ?",
        product_id)[0]
    toggle = first.get_by_role("button", name="Why this recommendation?")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    toggle.click()
    expect(first.get_by_role("button", name="Hide explanation")).to_have_attribute("aria-expanded", "true")
    panel = first.get_by_test_id("explanation")
    expect(panel).to_contain_text(explanation)
    for factor in factors:
        expect(panel.get_by_role("listitem").filter(has_text=factor)).to_have_count(1)
    # the score taken apart: alpha 0.2 of behaviour, 0.8 of content
    expect(first.get_by_test_id("score-breakdown")).to_contain_text("behaviour 0.20 ×")
    expect(first.get_by_test_id("score-breakdown")).to_contain_text("content 0.80 ×")
    page.screenshot(path=SCREENSHOTS / "desktop-explanation.png")
    # the evidence links to the history items it came from
    assert evidence
    evidence_title, = published(shop, "SELECT title FROM products WHERE product_id = ?", evidence[0])[0]
    panel.get_by_role("link", name=evidence_title).click()
    expect(page).to_have_url(re.compile(f"#/products/{evidence[0]}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(evidence_title)
    similar = [t for t, in published(shop, "SELECT p.title FROM similar_products s JOIN products p "
                                           "ON p.product_id = s.similar_product_id WHERE s.product_id = ? "
                                           "ORDER BY s.rank", evidence[0])]
    expect(page.get_by_test_id("similar").get_by_role("link")).to_have_text(similar)
    page.screenshot(path=SCREENSHOTS / "desktop-product.png")


def test_the_user_page_shows_the_history_the_list_came_from(page, api):
    show_user(page, api, "U_TRAIL")
    history = page.get_by_test_id("history")
    for title in ("Trail Running Shoe Alpine", "Trail Running Shoe Ridge", "Merino Trail Running Socks"):
        expect(history.get_by_role("link", name=title).first).to_be_visible()
    expect(history.get_by_text("purchase").first).to_be_visible()


def test_copy_id_puts_the_product_id_on_the_clipboard(page, api):
    show_user(page, api, "U_TRAIL")
    first = cards(page).first
    product_id = first.get_attribute("data-product-id")
    first.get_by_role("button", name=f"Copy product ID {product_id}").click()
    expect(first.get_by_text("Copied!")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == product_id


def test_search_and_sort_within_the_list(page, api, shop):
    show_user(page, api, "U_TRAIL")
    expect(cards(page)).to_have_count(PER_PAGE)
    page.get_by_label("Search this list").fill("camping")
    camping = published(shop, "SELECT count(*) FROM recommendations JOIN products USING (product_id) "
                              "WHERE user_id = 'U_TRAIL' AND category = 'Camping'")[0][0]
    assert camping > 0
    expect(page.get_by_test_id("list-summary")).to_contain_text(f"{camping} of 10 recommendations match")
    for category in cards(page).get_by_test_id("category").all_inner_texts():
        assert category == "Camping"
    page.get_by_label("Search this list").fill("")
    page.get_by_label("Sort by").select_option(label="Price (low to high)")
    cheapest = published(shop, "SELECT min(p.price) FROM recommendations r JOIN products p USING (product_id) "
                               "WHERE user_id = 'U_TRAIL'")[0][0]
    prices = [float(p.strip("$").replace(",", "")) for p in cards(page).get_by_test_id("price").all_inner_texts()]
    assert prices == sorted(prices) and prices[0] == cheapest
    page.get_by_label("Sort by").select_option(label="Title (A–Z)")
    titles = cards(page).get_by_role("heading").all_inner_texts()
    assert titles == sorted(titles)
    page.get_by_label("Search this list").fill("no such thing at all")
    expect(page.get_by_test_id("empty-list")).to_contain_text("Nothing in this list matches")


def test_the_model_page_says_plainly_when_a_run_has_no_evaluation(page, api):
    """The tiny shop's 30 events leave the temporal test window empty: no numbers are invented for it."""
    show_user(page, api, "U_TRAIL")
    page.get_by_role("link", name="Model").click()
    expect(page.get_by_test_id("model-summary")).to_contain_text("0.20 (set in config.json)")
    expect(page.get_by_text("No alpha sweep in this run.")).to_be_visible()


def test_the_model_page_draws_the_alpha_sweep_and_the_test_metrics(page, sample_api, sample_run):
    """On the embedded sample, where alpha is chosen on validation."""
    page.goto(f"{sample_api}/#/model")
    chart = page.get_by_role("img", name=re.compile(r"NDCG@10 and Hit@10 against alpha \(test split\)"))
    expect(chart).to_be_visible()
    expect(chart.locator("polyline")).to_have_count(2)
    sweep = published(sample_run.warehouse, "SELECT alpha, value FROM alpha_sweep WHERE split = 'test' "
                                            "AND metric = 'ndcg' ORDER BY alpha")
    assert chart.locator("[data-metric=ndcg] circle").count() == len(sweep) == 11
    info = published(sample_run.warehouse, "SELECT hybrid_alpha, hit_at_10, hit_at_10_ci_low, hit_at_10_ci_high "
                                           "FROM model_info")[0]
    alpha, hit, low, high = info
    expect(page.get_by_test_id("chosen-alpha")).to_have_text(f"chosen {alpha:.1f}")
    summary = page.get_by_test_id("model-summary")
    expect(summary).to_contain_text(f"{alpha:.2f} (chosen on validation NDCG@10)")
    expect(summary).to_contain_text(f"{hit:.3f} [{low:.3f}, {high:.3f}]")
    behavior, chosen_on = published(sample_run.warehouse, "SELECT behavior_model, chosen_on FROM model_info")[0]
    kind, _, strength = behavior.partition(":")
    named = {"ease": f"EASE (lambda {strength})", "rp3beta": f"RP3beta (beta {strength})",
             "cosine": "item-item cosine"}[kind]
    expect(summary).to_contain_text(named)  # which behavioural model the lists use
    expect(page.get_by_test_id("model-chosen-on")).to_contain_text(chosen_on)
    # the numbers behind the chart, and the models compared on the test split
    page.get_by_text("Show the numbers").click()
    rows = page.get_by_test_id("sweep-table").get_by_role("row")
    expect(rows).to_have_count(len(sweep) + 1)
    expect(rows.nth(1)).to_contain_text(f"{sweep[0][1]:.3f}")
    table = page.get_by_test_id("metrics-table")
    expect(table.get_by_role("row")).to_have_count(6)
    ease, = published(sample_run.warehouse, "SELECT value FROM eval_metrics WHERE protocol = 'temporal' AND split = "
                                            "'test' AND model = 'ease' AND metric = 'ndcg' AND k = 10 AND segment = 'all'")[0]
    expect(table.get_by_role("row", name=re.compile("^EASE"))).to_contain_text(f"{ease:.3f}")
    page.get_by_role("combobox", name=re.compile("^Split")).select_option("validation")
    expect(page.get_by_role("img", name=re.compile(r"\(validation split\)"))).to_be_visible()
    page.get_by_role("combobox", name=re.compile("^Split")).select_option("test")
    page.screenshot(path=SCREENSHOTS / "sample-model.png", full_page=True)


def test_the_sample_dashboard_for_a_published_user(page, sample_api):
    """The screenshot the README shows: the sample's most active user, one explanation open."""
    page.goto(sample_api)
    started = page.evaluate("performance.now()")
    page.get_by_role("link", name=re.compile(r"^U\d+$")).first.click()
    expect(cards(page)).to_have_count(10)
    rendered = page.evaluate("performance.getEntriesByName('shoprec:list-rendered').at(-1).startTime") - started
    print(f"\nfirst render of a sample user's list: {rendered:.0f} ms from the click")
    cards(page).first.get_by_role("button", name="Why this recommendation?").click()
    expect(cards(page).first.get_by_test_id("explanation")).to_be_visible()
    page.screenshot(path=SCREENSHOTS / "sample-user.png")


@pytest.mark.parametrize("user_id", ["team/42", "100%?#&=+ sure", 'o\'brien "quoted"'])
def test_users_with_awkward_ids_open_like_any_other(page, api, shop, user_id):
    show_user(page, api, user_id)
    expect(page.get_by_role("heading", name=f"Recommendations for {user_id}")).to_be_visible()
    listed = published(shop, "SELECT p.title FROM recommendations r JOIN products p USING (product_id) "
                             "WHERE user_id = ? ORDER BY rank", user_id)
    expect(cards(page).get_by_role("heading")).to_have_text([title for title, in listed[:PER_PAGE]])
    page.reload()  # the address holds the id, encoded, and opens the same list
    expect(cards(page).get_by_role("heading")).to_have_text([title for title, in listed[:PER_PAGE]])


def test_products_with_awkward_ids_open_from_their_address_and_from_a_card(page, api, shop):
    page.goto(f"{api}/#/")
    page.evaluate(f"localStorage.setItem('shoprec.apiKey', '{KEY}')")
    page.reload()
    for product_id, title, *_ in AWKWARD_PRODUCTS:
        page.goto(f"{api}/#/products/{quote(product_id, safe='')}")
        expect(page.get_by_role("heading", name=title, level=1)).to_be_visible()
        expect(page.get_by_text(product_id, exact=True)).to_be_visible()
        expect(page.get_by_test_id("similar")).to_be_visible()
    show_user(page, api, "team/42")
    product_id, title = published(shop, "SELECT p.product_id, p.title FROM recommendations r JOIN products p "
                                        "USING (product_id) WHERE user_id = 'team/42' AND product_id IN "
                                        f"({', '.join('?' * len(AWKWARD_PRODUCTS))}) ORDER BY rank LIMIT 1",
                                  *[row[0] for row in AWKWARD_PRODUCTS])[0]
    page.get_by_label("Search this list").fill(title)
    cards(page).get_by_role("link", name=title, exact=True).click()
    expect(page.get_by_role("heading", name=title, level=1)).to_be_visible()
    expect(page.get_by_text(product_id, exact=True)).to_be_visible()


def test_an_unknown_user_gets_the_fallback_list_labelled_so(page, api):
    show_user(page, api, "U_NEVER_SEEN")
    expect(page.get_by_test_id("fallback-notice")).to_contain_text("Unknown user")
    expect(cards(page).first.get_by_text("Popular")).to_be_visible()
    expect(cards(page).first.get_by_role("heading")).to_have_text("Backpacking Tent Two Person")  # most bought
    page.screenshot(path=SCREENSHOTS / "desktop-unknown-user.png")


def test_a_wrong_api_key_is_said_plainly_and_the_right_one_is_kept(page, api):
    show_user(page, api, "U_TRAIL", key="not-the-key")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Wrong API key")
    expect(cards(page)).to_have_count(0)
    page.screenshot(path=SCREENSHOTS / "desktop-wrong-key.png")
    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Refresh").click()
    expect(cards(page)).to_have_count(PER_PAGE)
    page.reload()  # the key is remembered in local storage
    expect(page.get_by_label("API key")).to_have_value(KEY)
    expect(cards(page)).to_have_count(PER_PAGE)


def test_markup_in_a_title_shows_as_text_and_never_runs(page, api):
    show_user(page, api, "U_TRAIL")
    page.get_by_label("Search this list").fill("Summit")
    planted = cards(page).first
    expect(planted.get_by_role("heading")).to_have_text(PLANTED)
    assert planted.locator("img").count() == 0
    assert page.evaluate("window.__xss") is None


def test_on_a_phone_the_cards_stack_in_one_column(browser, api):
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        show_user(page, api, "U_TRAIL")
        expect(cards(page)).to_have_count(PER_PAGE)
        boxes = [cards(page).nth(i).bounding_box() for i in range(2)]
        assert boxes[0]["x"] == boxes[1]["x"] and boxes[1]["y"] > boxes[0]["y"]
        assert boxes[0]["width"] <= PHONE["width"]
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # no sideways scrolling
        page.screenshot(path=SCREENSHOTS / "phone-list.png", full_page=True)
    finally:
        context.close()


def test_the_dashboard_works_from_the_keyboard_alone(page, api):
    page.goto(api)
    page.get_by_label("User ID").focus()
    page.keyboard.type("U_TRAIL")
    page.keyboard.press("Tab")
    page.keyboard.type(KEY)
    page.keyboard.press("Enter")  # submits the form
    expect(cards(page)).to_have_count(PER_PAGE)
    toggle = cards(page).first.get_by_role("button", name="Why this recommendation?")
    toggle.focus()
    page.keyboard.press("Enter")
    expect(cards(page).first.get_by_test_id("explanation")).to_be_visible()
    # every control on the page has a name a screen reader can say
    unnamed = page.evaluate("""[...document.querySelectorAll('button, a, input, select')]
        .filter(el => !(el.innerText || el.getAttribute('aria-label') || el.labels?.[0]?.innerText || '').trim())
        .map(el => el.outerHTML)""")
    assert unnamed == []


def test_when_the_api_goes_down_the_page_says_so(browser, shop):
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    try:
        with api_server(shop.config_path) as url:
            show_user(page, url, "U_TRAIL")
            expect(cards(page)).to_have_count(PER_PAGE)
        # the server is stopped now
        page.get_by_role("button", name="Refresh").click()
        expect(page.get_by_role("alert").first).to_contain_text("The API is down")
        page.screenshot(path=SCREENSHOTS / "desktop-api-down.png")
    finally:
        context.close()


def test_the_build_stays_within_its_size_budget():
    """The JavaScript a first visit downloads, gzipped (printed for the record)."""
    scripts = list((BUILD / "assets").glob("*.js"))
    size = sum(len(gzip.compress(p.read_bytes(), compresslevel=9)) for p in scripts)
    print(f"\ndashboard JavaScript: {len(scripts)} file(s), {size / 1024:.1f} kB gzipped (budget {BUDGET_KB} kB)")
    assert scripts and size < BUDGET_KB * 1024
