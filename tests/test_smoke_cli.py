from tests.conftest import SYNTHETIC_POLICY


def test_scores_mode_end_to_end(synthetic, write_policy, run_cli):
    policy = write_policy(SYNTHETIC_POLICY)
    r = run_cli("check", "--policy", policy, "--data", synthetic, "--teacher-scores", "t",
                "--student-scores", "s", "--no-mlflow")
    assert r.exit_code in (0, 1), r.stderr
    assert r.report["schema_version"] == 1
