"""The built book in a real browser (headless system Chromium): every page of the table of contents loads
without console errors, every image loads, every internal link resolves, and search finds a chapter; and every
page reads well at 1280 px: tables that fit, no warnings or temporary paths in outputs, tables captioned as
tables, no issue numbers in the prose, no unrendered TeX.

The book is the session build ``built_book`` (conftest.py); the checks are plain functions in sitecheck.py
(the site) and readercheck.py (the reader).
A missing browser fails these tests (it does not skip them): ``make setup`` installs it.
"""

from __future__ import annotations

import importlib.util
import posixpath
import re
import shutil
import urllib.request
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sitecheck = _load("book_sitecheck", HERE / "sitecheck.py")
readercheck = _load("book_readercheck", HERE / "readercheck.py")

# Pages whose tables are still wider than the article at the browser's 1280 px, with how many such tables each
# has in the tiny build: to be reshaped (fewer columns, long-to-wide) or given a wider layout. Strict like
# KNOWN_CONSOLE_ERRORS: a page with more wide tables fails, and one with fewer fails until its count is lowered.
KNOWN_WIDE_TABLES: dict[str, int] = {}

# Console errors the real book has because of its toolchain, each with its cause. The allowance is strict:
# a known error that no longer occurs fails the test, so that its entry here is removed.
KNOWN_CONSOLE_ERRORS = {
    "Uncaught SyntaxError: Identifier 'THEBE_JS_URL' has already been declared": (
        "Sphinx 7.4 writes inline <script> bodies added after the builder starts twice (registry None vs ''"
        " filename), so sphinx-thebe's `const THEBE_JS_URL` is declared twice on every page; fixed in"
        " Sphinx 8.2.2 (sphinx-doc/sphinx#13402), which Jupyter Book 1 (sphinx~=7.0) cannot use."
        " Harmless here: the first declaration stands and thebe is not enabled."
    ),
}


def _known(problem: str) -> str | None:
    if ": console error: " not in problem:
        return None
    return next((known for known in KNOWN_CONSOLE_ERRORS if known in problem), None)


def _split_known(problems: list[str]) -> tuple[list[str], set[str]]:
    """(problems that are not known console errors, the known errors that occurred)."""
    unknown = [p for p in problems if _known(p) is None]
    return unknown, {_known(p) for p in problems} - {None}


@pytest.fixture(scope="module")
def browser():
    """Headless system Chromium; its absence fails the tests that need it (CI must run them)."""
    try:
        driver, missing = sitecheck.make_driver(), None
    except RuntimeError as err:
        driver, missing = None, str(err)
    if missing:
        pytest.fail(f"no browser for the book's browser test: {missing}", pytrace=False)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def book_html(built_book) -> Path:
    if built_book.exit_code != 0:
        pytest.fail("the tiny book build failed (see test_book_builds_with_tiny_parameters)", pytrace=False)
    return built_book.html


@pytest.fixture(scope="module")
def site(book_html):
    """The built book served on 127.0.0.1 (a free port) from a background thread: the base URL."""
    with sitecheck.serve(book_html) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def pages(built_book, book_html) -> list[str]:
    return sitecheck.toc_pages(built_book.root / "_toc.yml", book_html)


def test_pages_come_from_the_table_of_contents(built_book, book_html, pages):
    build = _load("book_build", ROOT / "book" / "build.py")
    chapters = [f"book/notebooks/{name}.html" for name in build.chapters(built_book.root)]
    toc = yaml.safe_load((built_book.root / "_toc.yml").read_text())
    assert pages[0] == toc["root"] + ".html"
    assert set(chapters) <= set(pages), "every executed chapter is a page the browser opens"
    assert len(pages) > len(chapters), "the prose pages too"
    assert [p for p in pages if not (book_html / p).is_file()] == []


def test_the_book_has_no_broken_pages_images_links_or_search(built_book, browser, site, pages):
    problems = sitecheck.check_site(site, pages, browser)
    # index.html sends the browser to the root page.
    browser.get(site + "index.html")
    problems += [] if _redirected(browser, site + pages[0]) else [f"index.html: no redirect to {pages[0]}"]
    chapters = [page for page in pages if page.startswith("book/notebooks/")]
    word = sitecheck.search_word(built_book.html / chapters[0])
    problems += sitecheck.check_search(site, word, chapters, browser)
    unknown, known = _split_known(problems)
    assert unknown == [], "\n".join(unknown)
    gone = set(KNOWN_CONSOLE_ERRORS) - known
    assert not gone, f"known console errors no longer occur, remove them from KNOWN_CONSOLE_ERRORS: {gone}"


def _redirected(driver, target: str, timeout: float = 10) -> bool:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, timeout).until(lambda d: d.current_url.split("#")[0] == target)
    except TimeoutException:
        return False
    return True


def _first_internal_link(html: str) -> re.Match:
    """The first <a> whose href is a relative link to another page (no scheme, no fragment)."""
    match = re.search(r'<a [^>]*?href="(?P<href>[^"#:?]+\.html)"', html)
    assert match, "no internal link to break"
    return match


def test_the_checker_reports_a_broken_image_and_broken_links(built_book, book_html, browser, pages, tmp_path):
    """A copy of the site with one image deleted, one link to a missing page and one to a missing id."""
    copy = tmp_path / "html"
    shutil.copytree(book_html, copy)
    expected = []

    # Delete an image that a page shows; every page that shows it reports it.
    image = next(
        posixpath.normpath(posixpath.join(posixpath.dirname(page), src))
        for page in pages
        for src in re.findall(r'<img [^>]*?src="([^"]+)"', (copy / page).read_text())
        if "_images/" in src
    )
    (copy / image).unlink()
    for page in pages:
        srcs = re.findall(r'<img [^>]*?src="([^"]+)"', (copy / page).read_text())
        if image in {posixpath.normpath(posixpath.join(posixpath.dirname(page), s)) for s in srcs}:
            expected.append(f"{page}: image {image} is broken (HTTP 404)")

    # One link to a page that does not exist, on the first page.
    page = pages[0]
    text = (copy / page).read_text()
    match = _first_internal_link(text)
    text = text[: match.start("href")] + "no-such-page.html" + text[match.end("href") :]
    (copy / page).write_text(text)
    missing = posixpath.normpath(posixpath.join(posixpath.dirname(page), "no-such-page.html"))
    expected.append(f"{page}: link to {missing} is broken (HTTP 404)")

    # One link to an id that the target page does not have, on the last page.
    page = pages[-1]
    text = (copy / page).read_text()
    match = _first_internal_link(text)
    text = text[: match.end("href")] + "#no-such-id" + text[match.end("href") :]
    (copy / page).write_text(text)
    target = posixpath.normpath(posixpath.join(posixpath.dirname(page), match["href"]))
    expected.append(
        f"{page}: link to {target}#no-such-id names #no-such-id, which no element on {target} has"
    )

    with sitecheck.serve(copy) as base_url:
        problems = sitecheck.check_site(base_url, pages, browser)
    unknown, _ = _split_known(problems)
    assert sorted(unknown) == sorted(expected)


def test_the_checker_reports_a_search_that_finds_no_chapter(browser, site, pages):
    chapters = [page for page in pages if page.startswith("book/notebooks/")]
    unknown, _ = _split_known(sitecheck.check_search(site, "qzxwvjk", chapters, browser, timeout=10))
    assert len(unknown) == 1 and unknown[0].startswith("search.html?q=qzxwvjk: no result links to a chapter")


def test_a_missing_browser_fails_with_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"chromium and chromedriver not found.*apt-get install"):
        sitecheck.make_driver()


def test_the_server_serves_the_folder_and_stops(tmp_path):
    (tmp_path / "a.html").write_text("<p id='x'>a</p>")
    with sitecheck.serve(tmp_path) as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        fetcher = sitecheck._Fetcher()
        assert fetcher.get(base_url + "a.html") == (200, {"x"})
        assert fetcher.get(base_url + "b.html")[0] == 404
    with pytest.raises(OSError):
        urllib.request.urlopen(base_url + "a.html", timeout=2)


WIDE = ": table wider than the page"


def test_pages_show_a_reader_what_fits_and_nothing_they_should_not_see(built_book, browser, site, pages):
    """No table wider than the article (beyond KNOWN_WIDE_TABLES), no warning or temporary path in an output,
    no table captioned "Fig.", no issue number in the prose, no unrendered TeX or caret formula."""
    allowed = (built_book.parameters["model"],)  # the tiny model's folder, which the tiny build names
    problems = readercheck.check_pages(site, pages, browser, sitecheck._wait_loaded, allowed=allowed)
    wide: dict[str, int] = {}
    for problem in problems:
        if WIDE in problem:
            wide[problem.split(":")[0]] = wide.get(problem.split(":")[0], 0) + 1
    unknown = [
        p
        for p in problems
        if WIDE not in p or wide[p.split(":")[0]] > KNOWN_WIDE_TABLES.get(p.split(":")[0], 0)
    ]
    assert unknown == [], "\n".join(unknown)
    fixed = {page: (wide.get(page, 0), n) for page, n in KNOWN_WIDE_TABLES.items() if wide.get(page, 0) < n}
    assert not fixed, f"fewer wide tables than KNOWN_WIDE_TABLES says (now, known): lower it: {fixed}"


READER_REGRESSIONS = """<html><head><title>t</title></head><body>
<article class="bd-article" style="width: 600px">
<p>As before issue 12, the bound is $e^{\\varepsilon}$, or e^ε in caret text.</p>
<div class="cell"><div class="cell_output"><pre>/tmp/tmpab12cd34/x.py:21: TqdmWarning: IProgress not found</pre>
<table><tr><td style="white-space: nowrap">{cells}</td></tr></table></div></div>
<figure id="tbl-x"><table><tr><td>1</td></tr></table>
<figcaption><p><span class="caption-number">Fig. 1 </span>A table.</p></figcaption></figure>
</article></body></html>"""


def test_the_reader_check_reports_each_regression(browser, tmp_path):
    (tmp_path / "bad.html").write_text(READER_REGRESSIONS.replace("{cells}", "0.1279 " * 200))
    (tmp_path / "good.html").write_text(
        '<html><body><article class="bd-article"><p>A table fits; ε is a budget.</p>'
        '<figure><table><tr><td>1</td></tr></table><figcaption><span class="caption-number">Table 1 </span>'
        "</figcaption></figure></article></body></html>"
    )
    with sitecheck.serve(tmp_path) as base_url:
        bad = readercheck.check_pages(base_url, ["bad.html"], browser, sitecheck._wait_loaded)
        good = readercheck.check_pages(base_url, ["good.html"], browser, sitecheck._wait_loaded)
    for what in (
        WIDE,
        "a warning",
        "a temporary path",
        "captioned as a figure",
        "issue number",
        "TeX",
        "caret",
    ):
        assert any(what in p for p in bad), (what, bad)
    assert good == []
