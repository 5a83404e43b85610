"""Prefect flows: when and where the stages run. Importing the package applies conceptlab's
embedded defaults first, so `python -m flows.serve` and a worker running these flows get them too."""

from components.environment import apply_embedded_defaults

apply_embedded_defaults()
