"""What a reader meets on a rendered page, checked in the browser (the browser test's second half).

The checks that sitecheck.py makes are about a site that works (pages, images, links, search); these are about
a page that reads well at a laptop's width (the browser window is 1280 px wide):

- a table wider than the article it sits in (its last columns are off-screen or behind a scroll bar);
- an output cell that shows a warning or a temporary path;
- a table captioned as a figure ("Fig. 3");
- the project's own history in the prose: "issue" followed by a number;
- TeX that MathJax did not render (``$...$``, ``\\frac``) and formulas typed as caret text (``e^ε``).

Each check returns problems as text, one a line, naming the page; an empty list is a clean page.
"""

from __future__ import annotations

import re
import urllib.parse

# Collected in the page, after MathJax has typeset it. Prose is the article's text without code, outputs,
# typeset math, scripts and styles.
_READER_STATE_JS = r"""
const article = document.querySelector('.bd-article') || document.querySelector('main') || document.body;
const width = article.clientWidth;
const label = (el) => {
  const fig = el.closest('figure');
  const cap = fig && fig.querySelector('figcaption');
  const text = cap ? cap.innerText : (el.closest('.cell') ? 'an output table' : 'a table');
  return text.replace(/\s+/g, ' ').slice(0, 80);
};
const wide = Array.from(article.querySelectorAll('table'))
  .filter(t => t.offsetParent !== null && t.scrollWidth > width + 2)
  .map(t => ({label: label(t), width: t.scrollWidth, room: width}));
const outputs = Array.from(article.querySelectorAll('.cell_output')).map(o => o.innerText);
const captions = Array.from(article.querySelectorAll('figure'))
  .filter(f => f.querySelector('table'))
  .map(f => { const n = f.querySelector('.caption-number'); return n ? n.innerText : ''; });
const clone = article.cloneNode(true);
clone.querySelectorAll('pre, code, .cell_output, .cell_input, mjx-container, .MathJax, script, style, '
                       + '.math, .toggle-details, button').forEach(e => e.remove());
return {wide: wide, outputs: outputs, captions: captions, prose: clone.textContent};
"""

WARNING = re.compile(r"\b\w*Warning\b")
TEMP_PATH = re.compile(r"(/tmp/|/var/folders/|\\Temp\\|\btmp[a-z0-9_]{8,})")
ISSUE = re.compile(r"\bissues?\s+#?\d+", re.IGNORECASE)
RAW_TEX = re.compile(r"\$[^$\s][^$]{0,80}\$|\\(?:frac|varepsilon|epsilon|sigma|delta|sqrt|mathrm|cdot)\b")
CARET = re.compile(r"[A-Za-z0-9)]\^[({A-Za-z0-9εδσ−-]")


def _wait_typeset(driver, timeout: float = 20) -> None:
    """Wait until MathJax (when the page loads it) has typeset the page."""
    import time

    deadline = time.monotonic() + timeout
    script = """
      if (!window.MathJax || !MathJax.startup || !MathJax.startup.promise) return true;
      if (window.__dpTypeset === undefined) {
        window.__dpTypeset = false;
        MathJax.startup.promise.then(() => { window.__dpTypeset = true; });
      }
      return window.__dpTypeset;
    """
    while not driver.execute_script(script):
        if time.monotonic() > deadline:
            return
        time.sleep(0.1)


def problems_in(page: str, state: dict, *, allowed: tuple[str, ...] = ()) -> list[str]:
    """The reader's problems in one page's collected ``state`` (``allowed``: text that may appear in outputs,
    such as the test's own model path)."""
    problems = [
        f"{page}: table wider than the page ({t['width']} px in {t['room']} px): {t['label']}"
        for t in state["wide"]
    ]
    for text in state["outputs"]:
        for ok in allowed:
            text = text.replace(ok, "")
        for pattern, what in ((WARNING, "a warning"), (TEMP_PATH, "a temporary path")):
            match = pattern.search(text)
            if match:
                problems.append(
                    f"{page}: an output shows {what}: {text[max(match.start() - 30, 0) : match.end() + 30]!r}"
                )
    problems += [
        f"{page}: a table captioned as a figure ({c!r})" for c in state["captions"] if c.startswith("Fig")
    ]
    prose = " ".join(state["prose"].split())
    for pattern, what in (
        (ISSUE, "the project's history (an issue number)"),
        (RAW_TEX, "TeX that MathJax did not render"),
        (CARET, "a formula typed as caret text"),
    ):
        for match in pattern.finditer(prose):
            problems.append(f"{page}: {what}: {prose[max(match.start() - 30, 0) : match.end() + 30]!r}")
    return problems


def check_pages(
    base_url: str, pages: list[str], driver, wait_loaded, *, allowed: tuple[str, ...] = ()
) -> list[str]:
    """Every reader's problem on every page, in page order (``wait_loaded``: sitecheck's page-load wait)."""
    problems: list[str] = []
    for page in pages:
        driver.get(urllib.parse.urljoin(base_url, page))
        wait_loaded(driver)
        _wait_typeset(driver)
        problems += problems_in(page, driver.execute_script(_READER_STATE_JS), allowed=allowed)
    driver.get("about:blank")
    return problems
