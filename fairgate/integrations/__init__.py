"""Systems fairgate reports to: MLflow and GitHub Actions."""
