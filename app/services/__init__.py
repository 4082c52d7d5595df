"""Plain functions: ids and values in, dicts out; no request or response objects."""
