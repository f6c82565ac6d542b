"""Policy v1: strict parsing, every error naming file, line and key path (exact messages)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from fairgate.core.metrics import CATALOGUE
from fairgate.errors import PolicyError
from fairgate.policy import load_policy
from tests.conftest import ROOT

BASE = """\
version: 1
audit:
  label: y
  positive_label: 1
  sensitive: [sex, race]
checks:
  - id: dp
    metric: demographic_parity_difference
    max_increase: 0.02
"""

SHIPPED = sorted([*ROOT.glob("policies/*.yaml"), *ROOT.glob("examples/*/policy.yaml")])


def error_of(tmp_path: Path, text: str) -> str:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as e:
        load_policy(path)
    return str(e.value).replace(str(path), "p.yaml")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_policies_are_valid(path: Path) -> None:
    loaded = load_policy(path)
    assert loaded.policy.checks


def test_on_is_a_key_not_a_boolean(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(BASE + "    on: [sex]\n")
    check = load_policy(path).policy.checks[0]
    assert check.on == ["sex"]
    assert load_policy(path).line_of(("checks", 0)) == 7


CASES = [
    ("unknown key", BASE.replace("    max_increase", "    maxx: 1\n    max_increase"),
     "p.yaml:9: checks[0].maxx: unknown key 'maxx' (allowed: id, metric, on, max, min, "
     "max_increase, max_decrease, max_relative_increase, max_relative_decrease, severity, "
     "on_undefined, on_inconclusive, alpha, description)"),
    ("duplicate key", BASE.replace("  label: y\n", "  label: y\n  label: z\n"),
     "p.yaml:4: audit.label: duplicate key (first given on line 3)"),
    ("wrong type", BASE.replace("max_increase: 0.02", "max_increase: '0.02'"),
     "p.yaml:9: checks[0].max_increase: input should be a valid number, got '0.02'"),
    ("unknown metric", BASE.replace("demographic_parity_difference", "demographic_parity_diff"),
     "p.yaml:8: checks[0].metric: unknown metric 'demographic_parity_diff'; did you mean "
     "'demographic_parity_difference' or 'demographic_parity_ratio' or "
     "'demographic_parity_difference_to_overall'? (`fairgate metrics` lists them all)"),
    ("impossible min", BASE.replace("demographic_parity_difference", "demographic_parity_ratio")
     .replace("max_increase: 0.02", "min: 1.2"),
     "p.yaml:9: checks[0].min: min 1.2 is above 1, the highest value demographic_parity_ratio "
     "can take: no model can pass"),
    ("impossible max", BASE.replace("max_increase: 0.02", "max: -0.1"),
     "p.yaml:9: checks[0].max: max -0.1 is below 0, the lowest value "
     "demographic_parity_difference can take: no model can pass"),
    ("min above max", BASE.replace("max_increase: 0.02", "max: 0.1\n    min: 0.2"),
     "p.yaml:10: checks[0].min: min 0.2 is above max 0.1"),
    ("negative increase", BASE.replace("max_increase: 0.02", "max_increase: -0.01"),
     "p.yaml:9: checks[0].max_increase: max_increase must be >= 0 (it bounds how much worse "
     "the student may get), got -0.01"),
    ("no bound", BASE.replace("    max_increase: 0.02\n", ""),
     "p.yaml:7: checks[0]: a check needs at least one bound: max, min, max_increase, "
     "max_decrease, max_relative_increase, max_relative_decrease"),
    ("unknown grouping", BASE + "    on: [age]\n",
     "p.yaml:10: checks[0].on[0]: grouping ['age'] must name distinct sensitive attributes "
     "(sex, race)"),
    ("on for an overall metric", BASE.replace("demographic_parity_difference", "accuracy")
     + "    on: [sex]\n",
     "p.yaml:10: checks[0].on: accuracy is computed over the whole audit set; remove 'on'"),
    ("duplicate id", BASE + "  - id: dp\n    metric: accuracy\n    min: 0.5\n",
     "p.yaml:10: checks[1].id: duplicate check id 'dp' (also checks[0])"),
    ("threshold out of range", BASE + "model:\n  threshold: 1.5\n",
     "p.yaml:11: model.threshold: input should be less than or equal to 1, got 1.5"),
    ("bad decide_on", BASE + "statistics:\n  decide_on: maybe\n",
     "p.yaml:11: statistics.decide_on: must be 'estimate', 'interval', 'significant' or 'conservative', "
     "got 'maybe'"),
    ("intervals needed", BASE + "statistics:\n  resamples: 0\n  decide_on: significant\n",
     "p.yaml:12: statistics.decide_on: decide_on: significant needs intervals; set "
     "resamples > 0"),
    ("missing label", BASE.replace("  label: y\n", ""),
     "p.yaml:2: audit.label: required key is missing"),
    ("version", BASE.replace("version: 1", "version: 2"),
     "p.yaml:1: version: must be 1, got 2"),
    ("reference of unknown attribute", BASE.replace("  sensitive:", "  reference_groups: "
     "{age: old}\n  sensitive:"),
     "p.yaml:5: audit.reference_groups.age: 'age' is not a sensitive attribute (sex, race)"),
    ("alpha on a metric without it", BASE + "    alpha: 2\n",
     "p.yaml:10: checks[0].alpha: demographic_parity_difference takes no alpha"),
    ("waiver without expiry", BASE + "waivers:\n  - check: dp\n    reason: known\n    owner: me\n",
     "p.yaml:11: waivers[0].expires: required key is missing"),
    ("waiver of no check", BASE + "waivers:\n  - check: nope\n    reason: r\n    owner: me\n"
     "    expires: 2030-01-01\n",
     "p.yaml:11: waivers[0].check: no check with id 'nope'"),
    ("waiver of one group", BASE + "waivers:\n  - check: dp\n    group: F\n    reason: r\n"
     "    owner: me\n    expires: 2030-01-01\n",
     "p.yaml:12: waivers[0].group: group-level waivers are not supported: checks are decided "
     "per grouping, so waive the grouping"),
    ("waiver of a grouping the check is not on", BASE + "    on: [sex]\nwaivers:\n  - check: dp"
     "\n    grouping: race\n    reason: r\n    owner: me\n    expires: 2030-01-01\n",
     "p.yaml:13: waivers[0].grouping: check 'dp' is not decided on grouping race (it is on: sex)"),
    ("blank waiver reason", BASE + "waivers:\n  - check: dp\n    reason: '  '\n    owner: me\n"
     "    expires: 2030-01-01\n",
     "p.yaml:12: waivers[0].reason: must not be blank"),
    ("bad waiver date", BASE + "waivers:\n  - check: dp\n    reason: r\n    owner: me\n"
     "    expires: '31/01/2030'\n",
     "p.yaml:14: waivers[0].expires: expires must be a date YYYY-MM-DD, got '31/01/2030'"),
    ("syntax", "version: 1\naudit: [\n", "p.yaml:3: not valid YAML: expected the node "
     "content, but found '<stream end>'"),
    ("not a mapping", "- 1\n- 2\n", "p.yaml:1: the policy must be a mapping of keys, got list"),
    ("empty", "", "p.yaml: the policy is empty"),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_policy_errors_name_file_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    assert error_of(tmp_path, text) == message


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    text = BASE.replace("max_increase: 0.02", "maxx: 1") + "model:\n  threshold: 2\n"
    message = error_of(tmp_path, text)
    assert message.splitlines() == [
        "3 problems in the policy:",
        "  p.yaml:7: checks[0]: a check needs at least one bound: max, min, max_increase, "
        "max_decrease, max_relative_increase, max_relative_decrease",
        "  p.yaml:9: checks[0].maxx: unknown key 'maxx' (allowed: id, metric, on, max, min, "
        "max_increase, max_decrease, max_relative_increase, max_relative_decrease, severity, "
        "on_undefined, on_inconclusive, alpha, description)",
        "  p.yaml:11: model.threshold: input should be less than or equal to 1, got 2",
    ]


def test_quoted_waiver_date_is_read_as_a_date(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(BASE + "waivers:\n  - {check: dp, reason: r, owner: me, expires: '2030-01-31'}\n")
    assert str(load_policy(path).policy.waivers[0].expires) == "2030-01-31"


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"nope\.yaml: policy file not found$"):
        load_policy(tmp_path / "nope.yaml")


def test_validate_command(tmp_path: Path, run_cli) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(BASE)
    ok = run_cli("policy", "validate", path)
    assert ok.exit_code == 0
    assert ok.stdout == f"{path}: valid policy (version 1): 1 checks over groupings sex, race\n"
    path.write_text(BASE.replace("max_increase", "max_inc"))
    bad = run_cli("policy", "validate", path)
    assert bad.exit_code == 2
    assert bad.stderr.startswith(f"fairgate: error: 2 problems in the policy:\n  {path}:7:")
    assert "Traceback" not in bad.stderr


def test_schema_command_validates_shipped_policies(run_cli) -> None:
    result = run_cli("policy", "schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in SHIPPED:
        data = yaml.safe_load(path.read_text())
        # PyYAML 1.1 reads the key `on` as True; fairgate's loader does not
        for check in data["checks"]:
            if True in check:
                check["on"] = check.pop(True)
        assert list(validator.iter_errors(data)) == [], path
    bad = {"version": 1, "audit": {"label": "y", "positive_label": 1, "sensitive": ["s"]},
           "checks": [{"id": "x", "metric": "nope", "max": 1}]}
    assert list(validator.iter_errors(bad))


def test_metrics_command_lists_the_catalogue(run_cli) -> None:
    result = run_cli("metrics")
    assert result.exit_code == 0
    lines = [line for line in result.stdout.splitlines() if line.startswith("  ")]
    notes = [line.strip() for line in lines if line.split()[0] == "differs"]
    listed = {line.split()[0] for line in lines if line.split()[0] != "differs"}
    assert listed == set(CATALOGUE)
    as_json = json.loads(run_cli("metrics", "--json").stdout)
    assert {m["name"] for m in as_json} == set(CATALOGUE)
    # a definition that differs on purpose from a peer's says so, under its line
    differs = {m["name"]: m["differs"] for m in as_json if "differs" in m}
    assert differs["knn_consistency"] == CATALOGUE["knn_consistency"].note
    assert "gated groups" in differs["between_group_theil_index"]
    assert len(notes) == len(differs) and all(n.startswith("differs on purpose: ") for n in notes)
