"""Check a built HTML book in a real browser: console errors, images, internal links, search.

Plain functions, so that a test can run them on a deliberately broken copy of the book and prove that they
report what is broken. ``check_site`` returns human-readable problems, each naming the page and the resource;
an empty list means the site is clean.

The browser is the system Chromium driven by the system chromedriver (Debian's ``chromium`` and
``chromium-driver``); Selenium Manager is never used, so nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import re
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import yaml

INSTALL_HINT = (
    "install the system browser and its driver: `apt-get install -y chromium chromium-driver` "
    "(`make setup` does it), and selenium (`pip install -e .[dev]`)"
)

# What each page reports once it has finished loading: every <img> and every <a href>, resolved by the
# browser itself (so relative URLs, <base> and the theme's rewriting all count).
_PAGE_STATE_JS = """
return {
  images: Array.from(document.images).map(i => ({
    src: i.currentSrc || i.src, complete: i.complete, width: i.naturalWidth})),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
};
"""


# ---------------------------------------------------------------------------------------------- pages


def toc_pages(toc_file: Path, html_dir: Path | None = None) -> list[str]:
    """Every page of a Jupyter Book table of contents as an HTML path relative to the site root.

    Walks ``root``, ``parts``, ``chapters`` and nested ``sections``; ``glob`` entries are expanded against
    the built HTML in ``html_dir``; ``url`` entries (external) are not pages of the book.
    """
    toc = yaml.safe_load(toc_file.read_text())
    pages = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries:
            if "file" in entry:
                pages.append(entry["file"])
            elif "glob" in entry and html_dir is not None:
                found = sorted(html_dir.glob(entry["glob"] + ".html"))
                pages.extend(p.relative_to(html_dir).with_suffix("").as_posix() for p in found)
            for key in ("parts", "chapters", "sections"):
                walk(entry.get(key, []))

    walk([toc])
    out: list[str] = []
    for page in pages:
        name = re.sub(r"\.(md|ipynb|rst)$", "", page) + ".html"
        if name not in out:
            out.append(name)
    return out


# --------------------------------------------------------------------------------------------- server


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 (a free port) from a background thread; yield the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name=f"serve {directory}", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# -------------------------------------------------------------------------------------------- browser


def make_driver():
    """Headless system Chromium through the system chromedriver, with the browser log enabled.

    Raises ``RuntimeError`` naming what to install when the browser, the driver or selenium is missing.
    """
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as err:
        raise RuntimeError(f"selenium is not installed: {INSTALL_HINT}") from err
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", browser), ("chromedriver", driver_path)) if not path]
    if missing:
        raise RuntimeError(f"{' and '.join(missing)} not found on PATH: {INSTALL_HINT}")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--window-size=1280,900",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager (which would download a driver) is never consulted.
    service = Service(executable_path=driver_path)
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    return driver


# --------------------------------------------------------------------------------------------- checks


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value and (name == "id" or (name == "name" and tag == "a")):
                self.ids.add(value)


class _Fetcher:
    """HTTP status and element ids of same-origin targets, each fetched once."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[int, set[str]]] = {}

    def get(self, url: str) -> tuple[int, set[str]]:
        if url not in self._cache:
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    status, body = response.status, response.read()
                    kind = response.headers.get_content_type()
            except urllib.error.HTTPError as err:
                status, body, kind = err.code, b"", ""
            ids: set[str] = set()
            if kind == "text/html":
                parser = _Ids()
                parser.feed(body.decode("utf-8", "replace"))
                ids = parser.ids
            self._cache[url] = (status, ids)
        return self._cache[url]


def _wait_loaded(driver, timeout: float = 20) -> None:
    """Wait for the load event and for every <img> (lazy ones made eager) to finish or fail."""
    deadline = time.monotonic() + timeout
    while driver.execute_script("return document.readyState") != "complete":
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)
    driver.execute_script("for (const i of document.images) { i.loading = 'eager'; }")
    while not driver.execute_script("return Array.from(document.images).every(i => i.complete)"):
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)


def _severe_console(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def _console_problems(page: str, messages: list[str], base_url: str, already_reported=()) -> list[str]:
    """SEVERE console messages as problems, less failed loads of ``already_reported`` URLs."""
    # The browser asks for /favicon.ico by itself when a page declares no icon: not the page's request.
    skip = [*already_reported, urllib.parse.urljoin(base_url, "/favicon.ico")]
    return [
        f"{page}: console error: {message}"
        for message in messages
        if not any(message.startswith(url + " ") for url in skip)
    ]


def check_page(base_url: str, page: str, driver, fetcher: _Fetcher | None = None) -> list[str]:
    """Problems on one page (``page`` is relative to ``base_url``): console errors, images, links."""
    fetcher = fetcher or _Fetcher()
    origin = urllib.parse.urlsplit(base_url)[:2]
    url = urllib.parse.urljoin(base_url, page)
    status, _ = fetcher.get(url)
    if status != 200:
        return [f"{page}: the page itself is not served (HTTP {status})"]
    driver.get_log("browser")  # nothing from before this page
    driver.get(url)
    _wait_loaded(driver)
    state = driver.execute_script(_PAGE_STATE_JS)
    # Leave the page, so that everything it logs (late scripts included) is in the log read below.
    driver.get("about:blank")
    console = _severe_console(driver)
    problems: list[str] = []

    broken_images = []
    for image in state["images"]:
        if (not image["complete"] or not image["width"]) and image["src"] not in broken_images:
            broken_images.append(image["src"])
            same_origin = urllib.parse.urlsplit(image["src"])[:2] == origin
            code = fetcher.get(image["src"])[0] if same_origin else None
            why = f"HTTP {code}" if code not in (None, 200) else "did not load"
            problems.append(f"{page}: image {_rel(image['src'], base_url)} is broken ({why})")

    # A failed <img> also logs "URL - Failed to load resource"; it is reported once, as the image.
    problems += _console_problems(page, console, base_url, already_reported=broken_images)

    seen = set()
    for href in state["links"]:
        parts = urllib.parse.urlsplit(href)
        if parts[:2] != origin or href in seen:
            continue
        seen.add(href)
        target = urllib.parse.urlunsplit((*parts[:4], ""))
        code, ids = fetcher.get(target)
        if code != 200:
            problems.append(f"{page}: link to {_rel(href, base_url)} is broken (HTTP {code})")
        elif parts.fragment and urllib.parse.unquote(parts.fragment) not in ids:
            problems.append(
                f"{page}: link to {_rel(href, base_url)} names #{parts.fragment}, "
                f"which no element on {_rel(target, base_url)} has"
            )
    return problems


def check_search(base_url: str, word: str, chapters: list[str], driver, timeout: float = 20) -> list[str]:
    """Search for ``word`` on search.html; a problem unless at least one result links to one of ``chapters``."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    page = f"search.html?q={urllib.parse.quote(word)}"
    summary_js = (
        "const s = document.querySelector('#search-results .search-summary'); return s ? s.innerText : ''"
    )
    driver.get_log("browser")
    driver.get(urllib.parse.urljoin(base_url, page))
    problems = []
    try:
        # Sphinx's search writes its summary ("Search finished, found N pages...") once the list is complete.
        WebDriverWait(driver, timeout).until(lambda d: d.execute_script(summary_js).strip())
    except TimeoutException:
        problems.append(f"{page}: the search did not finish within {timeout:.0f} s")
    hits = driver.execute_script(
        "return Array.from(document.querySelectorAll('#search-results ul.search li a')).map(a => a.href)"
    )
    targets = {urllib.parse.urljoin(base_url, chapter) for chapter in chapters}
    found = [h for h in hits if urllib.parse.urlunsplit((*urllib.parse.urlsplit(h)[:3], "", "")) in targets]
    if not found:
        summary = driver.execute_script(summary_js).strip()
        problems.append(
            f"{page}: no result links to a chapter ({len(hits)} results: {hits[:5]}; {summary!r})"
        )
    driver.get("about:blank")
    problems += _console_problems(page, _severe_console(driver), base_url)
    return problems


def check_site(base_url: str, pages: list[str], driver) -> list[str]:
    """Every problem on every page, in page order (an empty list: the site is clean)."""
    fetcher = _Fetcher()
    problems: list[str] = []
    for page in pages:
        problems += check_page(base_url, page, driver, fetcher)
    return problems


def search_word(html_file: Path) -> str:
    """A word of a page's title (the longest), which the search index must know."""
    text = html_file.read_text()
    match = re.search(r"<h1[^>]*>(.*?)</h1>", text, re.S)
    title = re.sub(r"<[^>]+>", " ", match.group(1) if match else "")
    words = sorted(re.findall(r"[A-Za-z]{4,}", title), key=len, reverse=True)
    if not words:
        raise ValueError(f"no title word of four letters or more in {html_file}")
    return words[0]


def _rel(url: str, base_url: str) -> str:
    return url[len(base_url) :] if url.startswith(base_url) else url
