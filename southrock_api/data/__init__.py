"""The database: engine and sessions, models, migrations, the CSV importer and demo data."""
