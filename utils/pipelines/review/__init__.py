"""The review-and-annotate web app (docs/review_app.md): ``server.create_app(...)`` and the
page under ``static/``."""
