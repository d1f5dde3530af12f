"""The book's Sphinx extension: glued tables numbered and captioned as tables, and padded table cells.

A table reaches a page as a glued DataFrame shown with ``glue:figure``, which Sphinx would number and caption
as a figure ("Fig. 3"). A ``glue:figure`` that shows a table (or whose ``:name:`` starts with ``tbl-``) becomes
a :class:`TableFigure`, numbered in the tables' own sequence and captioned "Table 3" (``{numref}`` links
follow). The stylesheet pads the cells of every table, glued or not, so that numbers never run together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.transforms import SphinxTransform

TABLE_PREFIX = "tbl-"
STATIC = Path(__file__).resolve().parent / "static"


class TableFigure(nodes.figure):
    """A figure that holds a table: rendered as a figure, numbered as a table."""


class GluedTables(SphinxTransform):
    """Turn each figure named ``tbl-...`` into a :class:`TableFigure` before figures are numbered."""

    default_priority = 500

    def apply(self, **kwargs: Any) -> None:
        for figure in list(self.document.findall(nodes.figure)):
            if type(figure) is nodes.figure and _holds_table(figure):
                table = TableFigure(figure.rawsource, *figure.children, **figure.attributes)
                figure.replace_self(table)
                for name in table["ids"]:  # labels and {numref} look the node up by its id
                    self.document.ids[name] = table


def _holds_table(figure: nodes.figure) -> bool:
    """A figure named ``tbl-...``, or one whose content is a table (a glued DataFrame's HTML, or a table)."""
    if any(i.startswith(TABLE_PREFIX) for i in figure["ids"]):
        return True
    return any(
        isinstance(node, nodes.table) or (isinstance(node, nodes.raw) and "<table" in node.astext())
        for node in figure.findall()
        if not isinstance(node, nodes.caption)
    )


def _visit(self: Any, node: nodes.Element) -> None:
    self.visit_figure(node)


def _depart(self: Any, node: nodes.Element) -> None:
    self.depart_figure(node)


def _static_path(app: Sphinx) -> None:
    app.config.html_static_path.append(str(STATIC))


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_enumerable_node(TableFigure, "table", html=(_visit, _depart))
    app.add_transform(GluedTables)
    app.connect("builder-inited", _static_path)
    app.add_css_file("dpcore_book.css")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
