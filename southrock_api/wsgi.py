"""The WSGI application: `gunicorn -c gunicorn.conf.py southrock_api.wsgi:app` (docs/deployment.md §4)."""

from southrock_api.app import create_app
from southrock_api.data import migrations

app = create_app()
# Said in the log at once, rather than in every API request's E9010.
migrations.warn_if_not_migrated(app)
