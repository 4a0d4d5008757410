"""`python -m examples.shop [--host H] [--port P]`: serve the shop with uvicorn."""

import argparse

import uvicorn

parser = argparse.ArgumentParser(prog="python -m examples.shop")
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8000)
args = parser.parse_args()
print(f"shop on http://{args.host}:{args.port}  (metrics: http://{args.host}:{args.port}/metrics)")
uvicorn.run("examples.shop.app:app", host=args.host, port=args.port, log_level="info")
