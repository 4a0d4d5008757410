"""The trivial Django project with otel-kit's one line: "otel_kit.django" in INSTALLED_APPS."""

from wsgi_django import project

app = project(["otel_kit.django"], [], [])
