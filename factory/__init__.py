"""vlfactory: versioned visual-reasoning datasets in a DuckLake catalog.

    import vlfactory
    ds = vlfactory.load("sft@iter1", lake="./lake")   # a datasets.Dataset, images as the Image feature
    vlfactory.run("quickstart", stages=["ingest"])     # what `vlfactory run` does

The API lives in vlfactory.api; its names are loaded on first use (PEP 562), so `import vlfactory` stays light
(no duckdb, datasets or torch until a function needs them).
"""

from __future__ import annotations

API = ("load", "table", "frame", "run", "iterate", "evaluate", "versions", "diff", "RunResult", "opened", "lake_spec")
__all__ = [*API, "Lake"]


def __getattr__(name: str):
    if name in API:
        from vlfactory import api

        return getattr(api, name)
    if name == "Lake":
        from vlfactory.stores.lake import Lake

        return Lake
    raise AttributeError(f"module 'vlfactory' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
