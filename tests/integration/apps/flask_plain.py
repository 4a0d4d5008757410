"""A Flask app without a line of otel-kit (`otel-kit run` measures it; `flask_setup.py` calls
`setup_metrics(app)` on it): blueprints with a `url_prefix`, one nested in another, a streamed
response, an exception, a method of the app's own (PURGE), a file and a route at `/healthz`."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, send_file

# Between the chunks of /stream: the request lasts at least 3 of these until the server closes
# the response, while the app's view function returns at once.
STREAM_PAUSE_S = 0.15


def create_app() -> Flask:
    app = Flask(__name__)
    api = Blueprint("api", __name__, url_prefix="/api/v1")
    admin = Blueprint("admin", __name__, url_prefix="/admin")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        return {"id": item_id, "pid": os.getpid()}

    @api.get("/users/<user_id>")
    def user(user_id: str) -> dict[str, str]:
        return {"user": user_id}

    @admin.post("/reports/<int:report_id>")
    def report(report_id: int) -> tuple[dict[str, int], int]:
        return {"report": report_id}, 201

    @app.route("/cache/<key>", methods=["PURGE"])
    def purge(key: str) -> str:
        return f"purged {key}"

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[bytes]:
            for i in range(4):
                if i:
                    time.sleep(STREAM_PAUSE_S)
                yield b"chunk %d\n" % i

        return Response(chunks(), mimetype="text/plain")

    @app.get("/download")
    def download() -> Response:
        """A file: the server's wsgi.file_wrapper (gunicorn sends it with sendfile())."""
        return send_file(os.path.abspath(__file__), mimetype="text/plain")

    @app.get("/boom")
    def boom() -> str:
        raise ValueError("the view failed")

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    api.register_blueprint(admin)  # /api/v1/admin/...
    app.register_blueprint(api)
    return app


app = create_app()
