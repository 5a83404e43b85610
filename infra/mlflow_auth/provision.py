"""Creates the team's MLflow identities and their grants; safe to run again (`infra/team.sh mlflow-users`).

Runs as the admin (MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME/PASSWORD); each user's password comes
from the environment. What each identity may do:
  viewer    READ on everything (the server's default_permission): browse runs and the registry
  training  EDIT on every experiment and registered model (a role): runs, model versions, `challenger`
  gate      EDIT on every registered model (a role): gate.* tags and aliases; with MLFLOW_CHAMPION_SETTERS
            naming it, the only non-admin that may set or delete `champion` (conceptlab_mlflow_auth.py)
Deleting models or versions needs MANAGE, which only the admin and a model's creator hold.
"""

from __future__ import annotations

import os
import sys

import mlflow.server
from mlflow.exceptions import RestException

WORKSPACE = "default"
USERS = {"viewer": "MLFLOW_VIEWER_PASSWORD", "training": "MLFLOW_TRAINING_PASSWORD", "gate": "MLFLOW_GATE_PASSWORD"}
ROLES = {
    "training": [("experiment", "EDIT"), ("registered_model", "EDIT")],
    "gate": [("registered_model", "EDIT")],
}


def main() -> None:
    missing = [v for v in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_PASSWORD", *USERS.values()) if not os.environ.get(v)]
    if missing:
        sys.exit(f"provision: set {', '.join(missing)} (the admin's credentials and each user's password)")
    admin = mlflow.server.get_app_client("basic-auth", tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    for user, password_variable in USERS.items():
        try:
            admin.get_user(user)
            admin.update_user_password(user, os.environ[password_variable])
        except RestException:
            admin.create_user(user, os.environ[password_variable])
    roles = {r.name: r for r in admin.list_roles(WORKSPACE)}
    for name, grants in ROLES.items():
        role = roles.get(name) or admin.create_role(WORKSPACE, name)
        held = {(p.resource_type, p.resource_pattern) for p in admin.list_role_permissions(role.id)}
        for resource_type, permission in grants:
            if (resource_type, "*") not in held:
                admin.add_role_permission(role.id, resource_type, "*", permission)
        if name not in {r.name for r in admin.list_user_roles(name)}:
            admin.assign_role(name, role.id)
    print(f"MLflow users {', '.join(USERS)} and roles {', '.join(ROLES)} in place")


if __name__ == "__main__":
    main()
