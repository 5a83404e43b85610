"""One machine, no work pools: serve the scheduled retrain flow from this checkout.

    uv run python -m flows.serve            # cron from $CONCEPTLAB_RETRAIN_CRON, default 03:00 UTC daily

A team uses prefect.yaml (work pools, workers) instead; see infra/README.md.
"""

from __future__ import annotations

import os

from flows.promote import promote
from flows.retrain import retrain
from flows.train_concept import train_concept


def main() -> None:
    from prefect import serve

    cron = os.environ.get("CONCEPTLAB_RETRAIN_CRON", "0 3 * * *")
    serve(
        retrain.to_deployment(name="retrain-nightly", cron=cron, parameters={"repo": "."}, concurrency_limit=1),
        train_concept.to_deployment(name="train-concept", parameters={"repo": "."}, concurrency_limit=1),
        promote.to_deployment(name="promote", parameters={"repo": "."}),
    )


if __name__ == "__main__":
    main()
