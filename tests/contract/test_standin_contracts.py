"""The stand-ins shipped in billflow_local check requests against copies of the trimmed contracts; the copies
must stay the files the contract tests and trim scripts keep up to date."""

from __future__ import annotations

from pathlib import Path

import pytest

from billflow_local.standins import hubspot_contract, stripe_contract, twenty_contract

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts"


@pytest.mark.parametrize(("packaged", "original"), [
    (stripe_contract.SPEC_PATH, CONTRACTS / "stripe" / "spec3.trimmed.json"),
    (twenty_contract.SPEC_PATH, CONTRACTS / "twenty" / "openapi.trimmed.json"),
    *((hubspot_contract.CONTRACTS / f"{name}.trimmed.json", CONTRACTS / "hubspot" / f"{name}.trimmed.json")
      for name in hubspot_contract.SPECS),
])
def test_the_packaged_contract_is_the_trimmed_one(packaged: Path, original: Path) -> None:
    assert packaged.read_bytes() == original.read_bytes(), f"copy {original} to {packaged}"
