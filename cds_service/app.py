"""The application factory."""

from __future__ import annotations

import atexit
import logging

from flask import Flask

from .api import bp
from .engine import Engine
from .feedback import FeedbackStore
from .settings import Settings


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(message)s")
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["CDS_SETTINGS"] = settings
    engine = Engine(settings)
    atexit.register(engine.close)
    app.extensions["cds_engine"] = engine
    app.extensions["cds_feedback"] = FeedbackStore(settings.feedback_db_path)
    app.register_blueprint(bp)
    return app
