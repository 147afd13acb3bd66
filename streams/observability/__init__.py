"""Observability: Prometheus metrics, drift (PSI) monitors, and the worker HTTP endpoints.

- ``metrics``: every metric of both workers, defined once, with the helpers the workers call.
- ``drift``: pure population-stability-index monitors (numeric and categorical).
- ``server``: a small HTTP server in a daemon thread.
"""
