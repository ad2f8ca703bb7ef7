"""Export the message models' JSON Schemas into `schemas/generated/`.

python -m schemas.export          # rewrite the files
python -m schemas.export --check  # exit 1 if a file is out of date (CI and a test do this)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas.feedback import WelfareFeedback
from schemas.welfare import WelfareIntake

GENERATED = Path(__file__).parent / "generated"
EXPORTS: dict[str, type[BaseModel]] = {
    "welfare-intake.schema.json": WelfareIntake,
    "welfare-feedback.schema.json": WelfareFeedback,
}


def render(model: type[BaseModel]) -> str:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **model.model_json_schema(),
    }
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def documents() -> dict[str, str]:
    return {name: render(model) for name, model in EXPORTS.items()}


def stale(docs: dict[str, str] | None = None) -> list[str]:
    return [
        name
        for name, text in (docs or documents()).items()
        if not (GENERATED / name).exists() or (GENERATED / name).read_text("utf-8") != text
    ]


def write(docs: dict[str, str] | None = None) -> None:
    GENERATED.mkdir(exist_ok=True)
    for name, text in (docs or documents()).items():
        (GENERATED / name).write_text(text, "utf-8")


def main(argv: list[str]) -> int:
    if "--check" in argv:
        out_of_date = stale()
        for name in out_of_date:
            sys.stderr.write(
                f"schemas/generated/{name} is out of date: run python -m services.export\n"
            )
        return 1 if out_of_date else 0
    write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
