"""What does structural validation cost per referral Bundle and per Consent? fhir.resources'
R4B model (the full path) against the lean models (adapters/fhir/lean.py, the fast path),
and `validate_resource` as the hub runs it (the fast path, else the full one, then the
hub's own rules) against the same function without the fast path. A few seconds:

    python -m bench.validation [--seconds 0.1]
"""

from __future__ import annotations

import argparse
import time
import timeit
from collections.abc import Callable
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from adapters.fhir import lean, validate
from services.demo.samples import consent_resource, fictional_bsn, referral_bundle


def per_call_us(fn: Callable[[], object], seconds: float) -> float:
    """The best of three runs of about `seconds` each, in microseconds per call."""
    fn()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < 0.02:
        fn()
        calls += 1
    number = max(1, int(calls * seconds / 0.02))
    return min(timeit.repeat(fn, repeat=3, number=number)) / number * 1e6


def without_fast_path(data: dict[str, Any]) -> str:
    """`validate_resource` as it was before the fast path."""
    resource_type = str(data["resourceType"])
    validate._validate_full(data, resource_type)
    validate._check_rules(data, resource_type)
    return resource_type


def measure(data: dict[str, Any], seconds: float) -> dict[str, float]:
    full_model = get_fhir_model_class(data["resourceType"])
    lean_model = lean.TOP_LEVEL[data["resourceType"]]
    assert lean.accepts(data), "the sample does not take the fast path"
    return {
        "full": per_call_us(lambda: full_model.model_validate(data), seconds),
        "lean": per_call_us(lambda: lean_model.model_validate(data), seconds),
        "before": per_call_us(lambda: without_fast_path(data), seconds),
        "validate_resource": per_call_us(lambda: validate.validate_resource(data), seconds),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.1, help="length of one timing run")
    args = parser.parse_args(argv)
    samples = {
        "referral Bundle": referral_bundle("VERW-BENCH-1", bsn=fictional_bsn(3)),
        "Consent": consent_resource("c-bench-1", referral_id="VERW-BENCH-1"),
    }
    print("µs per resource (best of 3)")
    print(
        f"{'':16} {'R4B model':>10} {'lean':>8} {'ratio':>7}"
        f" {'validate (before)':>18} {'validate (now)':>15} {'ratio':>7}"
    )
    for name, data in samples.items():
        t = measure(data, args.seconds)
        print(
            f"{name:16} {t['full']:10.1f} {t['lean']:8.1f} {t['lean'] / t['full']:6.3f}x"
            f" {t['before']:18.1f} {t['validate_resource']:15.1f}"
            f" {t['validate_resource'] / t['before']:6.3f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
