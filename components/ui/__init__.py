"""`conceptlab ui`: a small web app for the team over the MLflow registry (concepts, versions, gate
verdicts, a playground). Server-rendered pages (FastAPI + Jinja2), read-only unless started with
--allow-promotion. Imported only by the `ui` command, so no pipeline stage depends on it."""
