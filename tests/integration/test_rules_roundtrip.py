"""Rules as code, round trip, through the CLI and the local runtime: apply a folder, export, apply the export:
the plan has nothing to change and the table is exactly as it was."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from billflow_cli.main import main
from billflow_local.runtime import LocalRuntime

ROOT = Path(__file__).resolve().parents[2]
TENANT = "roundtrip"

# Every spelling a folder may hold: several documents per file, a `rules:` list, the one-block shorthand,
# blocks with patterns, an inactive rule, values YAML 1.1 would turn into booleans or dates, unicode.
MORE_RULES = """\
id: deal-lost
name: "Perdu : prévenir l'équipe"
source: twenty
object: opportunity
active: false
order: 30
trigger: {type: event, on: edited, when: first_edit, fields: [stage]}
criteria:
  - {field: stage, comparator: changed_from, value: PROPOSAL}
  - {field: stage, comparator: in, value: [LOST, "no", "off"]}
  - {field: closeDate, comparator: is_not_empty}
pattern: "1 AND (2 OR NOT 3)"
actions:
  - {type: field_update, field: lostReason, value: "{{ record.name }} was lost"}
---
rules:
  - id: big-deal-blocks
    source: twenty
    object: opportunity
    order: 20
    blocks:
      - criteria:
          - {field: amount.amountMicros, comparator: between, value: [1000000000, 9000000000]}
          - {field: amount.currencyCode, comparator: equals, value: EUR}
        pattern: "1 AND 2"
        actions: [{type: webhook, connection: finance-webhook}]
      - criteria:
          - {field: amount.amountMicros, comparator: greater_than, value: 9000000000}
        actions: [{type: stripe.invoice, connection: stripe-main, options: {days_until_due: 14}}]
  - id: company-created
    source: twenty
    object: company
    trigger: {type: event, on: created}
    criteria: [{field: address.addressCountry, comparator: equals, value: "2026-01-01"}]
    actions: [{type: webhook, connection: finance-webhook}]
"""


@pytest.fixture(scope="module")
def runtime() -> Iterator[LocalRuntime]:
    with LocalRuntime(ROOT, port=0, echo=None, log_level="WARNING") as local:
        yield local


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    (rules / "more").mkdir(parents=True)
    (rules / "won-to-stripe.yaml").write_text((ROOT / "examples" / "rules" / "won-to-stripe.yaml").read_text())
    (rules / "more" / "others.yml").write_text(MORE_RULES)
    return rules


def cli(runtime: LocalRuntime, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main([*argv, "--tenant", TENANT, "--api", runtime.url])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def rules_table(runtime: LocalRuntime) -> list[dict[str, Any]]:
    items = runtime.client("dynamodb").scan(TableName=runtime.name_of("RulesTable"))["Items"]
    return sorted((i for i in items if i.get("tenant", {}).get("S") == TENANT),
                  key=lambda i: json.dumps(i, sort_keys=True))


def test_apply_export_apply_changes_nothing(
    runtime: LocalRuntime, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rules", "validate", str(folder)]) == 0
    assert capsys.readouterr().out.startswith("4 rule(s) valid")
    out = cli(runtime, capsys, "rules", "apply", str(folder), "--prune")
    assert out.strip().endswith("apply: changed 4 rule(s)")
    stored = rules_table(runtime)

    exported = tmp_path / "exported.yaml"
    cli(runtime, capsys, "rules", "export", "--out", str(exported))
    documents = list(yaml.safe_load_all(exported.read_text(encoding="utf-8")))  # any YAML reader
    assert sorted(d["id"] for d in documents) == ["big-deal-blocks", "company-created", "deal-lost", "won-to-stripe"]
    lost = next(d for d in documents if d["id"] == "deal-lost")
    assert lost["active"] is False
    assert lost["blocks"][0]["criteria"][1]["value"] == ["LOST", "no", "off"]
    assert lost["name"] == "Perdu : prévenir l'équipe"

    out = cli(runtime, capsys, "rules", "plan", str(exported), "--prune")
    assert out.strip().splitlines()[-1] == "plan: nothing to change"
    assert all(line.split()[0] == "unchanged" for line in out.strip().splitlines()[:-1])
    out = cli(runtime, capsys, "rules", "apply", str(exported), "--prune")
    assert out.strip().endswith("apply: changed 0 rule(s)")
    assert rules_table(runtime) == stored  # not even a version went up

    # Exported one file per rule, the same; the original folder still plans as nothing to change too.
    per_rule = tmp_path / "per-rule"
    cli(runtime, capsys, "rules", "export", "--dir", str(per_rule))
    assert sorted(p.name for p in per_rule.iterdir()) == [
        "big-deal-blocks.yaml", "company-created.yaml", "deal-lost.yaml", "won-to-stripe.yaml"]
    assert cli(runtime, capsys, "rules", "plan", str(per_rule), "--prune").strip().endswith("nothing to change")
    assert cli(runtime, capsys, "rules", "plan", str(folder), "--prune").strip().endswith("nothing to change")

    # A second export is the same text: exports diff cleanly in git.
    again = tmp_path / "again.yaml"
    cli(runtime, capsys, "rules", "export", "--out", str(again))
    assert again.read_text(encoding="utf-8") == exported.read_text(encoding="utf-8")


def test_a_change_made_with_the_cli_shows_in_the_plan_until_exported(
    runtime: LocalRuntime, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(runtime, capsys, "rules", "apply", str(folder), "--prune")
    cli(runtime, capsys, "rules", "reorder", "--source", "twenty", "--object", "opportunity",
        "deal-lost", "big-deal-blocks", "won-to-stripe")
    out = cli(runtime, capsys, "rules", "plan", str(folder))
    assert "    change  won-to-stripe  (order)" in out
    assert "    change  deal-lost  (order)" in out
    assert " unchanged  big-deal-blocks" in out  # second, order 20, as it was
    assert out.strip().endswith("plan: 2 rule(s) to change")

    exported = tmp_path / "after-reorder.yaml"
    cli(runtime, capsys, "rules", "export", "--out", str(exported))
    assert cli(runtime, capsys, "rules", "plan", str(exported), "--prune").strip().endswith("nothing to change")
