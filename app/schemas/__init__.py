"""marshmallow schemas for input validation, built once at import."""
