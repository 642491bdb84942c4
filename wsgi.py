"""From a checkout (`make serve`, the tests): `gunicorn -c gunicorn.conf.py wsgi:app`; an installed release serves southrock_api.wsgi:app."""

from southrock_api.wsgi import app

__all__ = ["app"]
