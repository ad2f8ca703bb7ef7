"""Write every generated document into `schemas/generated/`: the message models' JSON
Schemas, the HTTP app's OpenAPI document and the topics' AsyncAPI document. A test fails
when one is stale.

    python -m services.export [--check]
"""

from __future__ import annotations

import sys

from schemas import export
from services.api.app import render_openapi
from services.asyncapi import render_asyncapi


def documents() -> dict[str, str]:
    return {
        **export.documents(),
        "openapi.json": render_openapi(),
        "asyncapi.json": render_asyncapi(),
    }


def main(argv: list[str]) -> int:
    docs = documents()
    if "--check" in argv:
        out_of_date = export.stale(docs)
        for name in out_of_date:
            sys.stderr.write(
                f"schemas/generated/{name} is out of date: run python -m services.export\n"
            )
        return 1 if out_of_date else 0
    export.write(docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
