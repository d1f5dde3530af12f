"""Section extraction for free-text radiology reports (MIMIC-CXR style upper-case headers).

A header is an upper-case phrase followed by a colon at the start of a line (``FINDINGS:``,
``IMPRESSION:``, ``FINDINGS AND IMPRESSION:``). Text is unwrapped and whitespace collapsed.

>>> r = " INDICATION:  Cough.\\n FINDINGS:\\n  No focal\\n consolidation.\\n IMPRESSION: Normal."
>>> split_sections(r)["FINDINGS"]
'No focal consolidation.'
>>> extract_findings_impression(r)
('No focal consolidation.', 'Normal.')
>>> extract_findings_impression(" FINDINGS AND IMPRESSION: Clear lungs.")
('Clear lungs.', '')
"""

from __future__ import annotations

import re

# Header: start of line, upper-case words (with spaces, slashes, ampersands), then a colon.
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z /&()-]{2,60}?)[ \t]*:", re.MULTILINE)
_WS = re.compile(r"\s+")

FINDINGS_HEADERS: tuple[str, ...] = (
    "FINDINGS",
    "FINDING",
    "FINDINGS AND IMPRESSION",
    "FINDINGS/IMPRESSION",
    "IMPRESSION AND FINDINGS",
    "FINDINGS AND IMPRESSIONS",
)
IMPRESSION_HEADERS: tuple[str, ...] = ("IMPRESSION", "IMPRESSIONS", "CONCLUSION", "CONCLUSIONS", "SUMMARY")
# Headers that hold findings and impression together: their text is the Findings, the impression is empty.
COMBINED_HEADERS: frozenset[str] = frozenset(
    {"FINDINGS AND IMPRESSION", "FINDINGS/IMPRESSION", "IMPRESSION AND FINDINGS", "FINDINGS AND IMPRESSIONS"}
)


def clean(text: str) -> str:
    """Unwrap lines and collapse whitespace."""
    return _WS.sub(" ", text).strip()


def split_sections(report: str) -> dict[str, str]:
    """The report's sections by upper-case header (first occurrence wins); text before any header is
    under ``""``."""
    out: dict[str, str] = {}
    matches = list(_HEADER.finditer(report))
    out[""] = clean(report[: matches[0].start()] if matches else report)
    for m, nxt in zip(matches, [*matches[1:], None], strict=False):
        name = _WS.sub(" ", m.group(1).strip())
        body = report[m.end() : nxt.start() if nxt else len(report)]
        out.setdefault(name, clean(body))
    return out


def extract_findings_impression(report: str) -> tuple[str, str]:
    """``(findings, impression)``; either is ``""`` when the report has no such section."""
    sections = split_sections(report)
    findings = next((sections[h] for h in FINDINGS_HEADERS if sections.get(h)), "")
    impression = next((sections[h] for h in IMPRESSION_HEADERS if sections.get(h)), "")
    if not findings:
        return "", impression
    return findings, impression
