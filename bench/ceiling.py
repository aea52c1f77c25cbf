"""The framework ceiling: the same gunicorn and Flask, doing only what any JSON service must
(parse the request body) and answering a fixed small JSON. The service is compared to it.

Run it as the service runs: `python bench/ceiling.py --port 8081 --workers 2 --worker-class
gevent` serves it with `cds_service.server.gunicorn_options`, the very settings (worker class,
workers, threads, worker connections, keep-alive, hooks) of `cds-service serve`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from flask import Flask, Response, request

app = Flask(__name__)
FIXED = json.dumps({"cards": []})


@app.get("/health")
def health():
    return Response('{"status":"ok"}', mimetype="application/json")


@app.post("/cds-services/<service_id>")
def invoke(service_id: str):
    json.loads(request.get_data())
    return Response(FIXED, mimetype="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--worker-class", default="gevent", choices=["gevent", "gthread"])
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    if args.worker_class == "gevent":  # as cli.py does, before anything opens a socket
        from gevent import monkey

        monkey.patch_all()
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from gunicorn.app.base import BaseApplication

    from cds_service.server import gunicorn_options

    options = gunicorn_options(
        bind=f"127.0.0.1:{args.port}",
        workers=args.workers,
        threads=args.threads,
        worker_class=args.worker_class,
    )

    class Ceiling(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            return app

    print(json.dumps({"gunicorn": {k: str(v) for k, v in options.items()}}), flush=True)
    Ceiling().run()


if __name__ == "__main__":
    main()
