"""The trace viewer: `vlfactory view [VERSION]` serves a read-only lake in the browser.

    from vlfactory.viewer import server
    server(lake, "iter1").serve_forever()

queries.py holds what it asks the lake (its parts: specs, index, lists, facets, sample), server.py the HTTP
handler, static/ the page (index.html, app.js).
"""

from vlfactory.viewer.server import server

__all__ = ["server"]
