"""Artifact generators: Grafana dashboards, Prometheus rules and Collector configuration, all
built from the metric catalogue. Used by the CLI and by the tests that keep `collector/` in
step; never imported by an instrumented application."""
