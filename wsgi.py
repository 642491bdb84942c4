"""WSGI entry point: `gunicorn -c gunicorn.conf.py wsgi:app`."""

from southrock_api import create_app, schema

app = create_app()
# Said in the log at once, rather than in every API request's E9010.
schema.warn_if_not_migrated(app)
