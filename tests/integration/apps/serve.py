"""Starts uvicorn itself: `python serve.py PORT` and `python -m serve PORT`."""

import sys

import uvicorn
from plain import app

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
