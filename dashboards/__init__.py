"""Grafana dashboards and Prometheus rules as code; `python -m dashboards` writes them into the Helm chart."""
