"""The framework ceiling: the same gunicorn and Flask, doing only what any JSON service must
(parse the request body) and answering a fixed small JSON. The service is compared to it."""

import json

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
