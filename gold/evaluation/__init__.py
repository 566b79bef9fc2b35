"""`gold eval` (the command in gold/cli.py, what it does in command.py): the same spec as GOLD
(feedback on), vanilla (feedback off, same budget and seeds), the teacher answering few-shot, the
student before distillation answering few-shot from the same seed examples (causal students) and,
when the spec names a labelled training file (evaluation.reference_path), the supervised reference
(the student trained on as many real labelled examples as the run generates), measured on the
spec's real evaluation data.

Every run is submitted with an Idempotency-Key derived from its exact spec, so a killed `gold eval`
re-run with the same arguments picks up the runs already finished (or still going) in Postgres.
A results file written earlier can stand in for those runs (`--resume-from`): the repeats it holds
are kept and only the others are run, so more repeats can be added on a stack that no longer has
the first ones (a new machine, a dropped database)."""
