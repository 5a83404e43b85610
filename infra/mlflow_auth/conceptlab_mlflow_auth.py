"""MLflow basic-auth plus one rule MLflow's permissions cannot express: only the gate moves `champion`.

MLflow's permissions are per registered model: setting any alias needs EDIT on the model and deleting
one needs MANAGE, and whoever creates a model gets MANAGE on it. The training identity registers
new models (one per concept), so a permission on the model cannot tell "set challenger" from "set
champion". This authorization function (the auth config's `authorization_function`) authenticates as
MLflow's own basic auth does, then refuses to set or delete a protected alias (MLFLOW_PROTECTED_ALIASES,
default `champion`) unless the user is one of MLFLOW_CHAMPION_SETTERS (the gate's identity) or an
admin. Everything else stays MLflow's own per-model permission check, which runs after this.
"""

from __future__ import annotations

import os

from flask import Response, request
from mlflow.server.auth import authenticate_request_basic_auth, make_forbidden_response, store
from werkzeug.datastructures import Authorization

ALIAS_PATH_SUFFIX = "/mlflow/registered-models/alias"  # /api/2.0/..., /ajax-api/2.0/...


def _names(variable: str, default: str = "") -> set[str]:
    return {n.strip() for n in os.environ.get(variable, default).split(",") if n.strip()}


def _requested_alias() -> str | None:
    if request.method == "GET":
        return None
    body = request.get_json(force=True, silent=True) or {}
    return body.get("alias") or request.args.get("alias")


def authenticate() -> Authorization | Response:
    auth = authenticate_request_basic_auth()
    if isinstance(auth, Response) or not request.path.endswith(ALIAS_PATH_SUFFIX):
        return auth
    if _requested_alias() in _names("MLFLOW_PROTECTED_ALIASES", "champion"):
        allowed = auth.username in _names("MLFLOW_CHAMPION_SETTERS") or store.get_user(auth.username).is_admin
        if not allowed:
            return make_forbidden_response()
    return auth
