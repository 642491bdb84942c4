"""What runs beside the server: the Python client, `southrock export` and the RTOPilot progress push."""
