"""The model card attached to every registered version and checked at approval.

- `facts`: reads the run's own artifacts (statistics, schema, split report, TFMA metrics, the clinical
  evaluation, the operating point) into one JSON-able mapping, aggregates only.
- `render`: pure; facts in, Markdown, HTML (every value escaped) and a short summary out.
- `attach`: logs the card to the version's MLflow run at registration and re-checks its digest at approval.
"""
