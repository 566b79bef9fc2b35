"""MLflow experiment tracking (GOLD_MLFLOW_TRACKING_URI; docs/mlflow.md). Every run becomes an
MLflow run: the spec as params, tags, metrics per iteration, the report, dataset, spec and student
as artifacts. The driver marks a run due in the transaction that commits a step (outbox.py); the
tracker (worker.py), a thread of the orchestrator, reads what is new (content.py) and sends it
(sender.py). mlflow is an optional extra: only worker.py and sender.py import it."""
