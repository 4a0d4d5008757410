"""Artifact generators: Grafana dashboards, Prometheus rules and Collector configuration, built
from the metric catalogue, and README's settings table, built from the settings. Used by the
CLI and by the tests that keep the shipped files in step; never imported by an instrumented
application."""

__all__: list[str] = []
