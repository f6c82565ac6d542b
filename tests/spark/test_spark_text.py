"""``--engine spark`` on a text model gives the local engine's report.json byte for byte: the
tokenizer travels with the model to the executors and each task encodes its own batches."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from tests.spark.conftest import without_run, write_files
from tests.text_fixtures import comments, text_model, train_tokenizer

SPARK_MASTER = "local[2]"

POLICY = """\
version: 1
audit: {label: y, positive_label: 1, sensitive: [sex]}
model:
  positive_column: 1
  inputs:
    text: {column: comment, tokenizer: tokenizer/tok.json, max_length: 12}
checks:
  - {id: dp, metric: demographic_parity_difference, max_increase: 0.05}
  - {id: acc, metric: accuracy, max_decrease: 0.05}
  - {id: cf, metric: counterfactual_flip_rate, max_increase: 0.05}
individual:
  sample_rows: 400
  counterfactual:
    text: comment
    swap: {he: she, young man: young woman}
statistics: {resamples: 100}
"""


def test_text_model_spark_report_is_the_local_report(spark, run_cli, tmp_path: Path) -> None:
    df = comments(2000, seed=11)
    data = write_files(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "audit", 5)
    (tmp_path / "tokenizer").mkdir()
    tok = train_tokenizer(df.comment.tolist(), pad_id=0)
    tok.save(str(tmp_path / "tokenizer" / "tok.json"))
    teacher = text_model(tmp_path / "t.onnx", tok)
    student = text_model(tmp_path / "s.onnx", tok, seed=2, noise=0.3)
    (tmp_path / "policy.yaml").write_text(POLICY)

    def gate(out: str, *extra: str) -> Path:
        r = run_cli("check", "--policy", tmp_path / "policy.yaml", "--data", data, "--teacher",
                    teacher, "--student", student, "--no-mlflow", "--format", "json", "--out",
                    tmp_path / out, "--batch-size", "300", *extra)
        assert r.exit_code in (0, 1), r.stderr
        return tmp_path / out

    local = gate("local")
    remote = gate("spark", "--engine", "spark", "--spark-conf",
                  "spark.sql.files.openCostInBytes=134217728")
    assert without_run(remote) == without_run(local)
    assert b'"substitutions"' in without_run(local)  # the probes are in the comparison
