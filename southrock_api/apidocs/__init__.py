"""The OpenAPI document (/openapi.json) and the /docs page rendered from it."""
