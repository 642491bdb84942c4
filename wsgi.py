"""WSGI entry point: `gunicorn -c gunicorn.conf.py wsgi:app`."""

from southrock_api import create_app

app = create_app()
