"""Baseline: the trivial Django project with no metrics at all."""

from wsgi_django import project

app = project([], [], [])
