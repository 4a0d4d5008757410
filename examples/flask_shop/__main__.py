"""`python -m examples.flask_shop [--host H] [--port P]`: serve the Flask shop with Flask's
threaded development server (production: `gunicorn -w 4 examples.flask_shop.app:app`)."""

import argparse

from examples.flask_shop.app import app

parser = argparse.ArgumentParser(prog="python -m examples.flask_shop")
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8000)
args = parser.parse_args()
print(f"shop on http://{args.host}:{args.port}  (metrics: http://{args.host}:{args.port}/metrics)")
app.run(host=args.host, port=args.port, threaded=True)  # threaded: its own payment call
