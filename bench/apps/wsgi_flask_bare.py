"""Baseline: the trivial Flask app with no metrics at all."""

from flask import Flask

app = Flask(__name__)


@app.get("/items/<int:item_id>")
def read_item(item_id: int) -> dict[str, int]:
    return {"id": item_id}
