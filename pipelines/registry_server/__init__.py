"""The shared MLflow server's side of dxpipe's approval rules (see `app` for how requests are checked).

`rules` decides (pure), `records` keeps the server's own tables, `app` is the `mlflow.app` plugin that
applies them, `routes` serves what clients ask the server (whoami, provenance, audit, reviewers), and
`deploy` starts PostgreSQL and `mlflow server --app-name dxpipe` on loopback.
"""
