"""The HTTP layer between the views and the cache.

A request travels one way: the view parses its input and names its page (endpoint, cache
namespaces, parameters, what computes it); `cached.py` asks the page cache for the entry and
turns it into a response: conditionals (ETag, If-None-Match, If-Modified-Since, 304), headers
(Cache-Control, Last-Modified, Age, Link) and the per-request parts of a stored rendering (the
API root URL). `render.py` makes the bytes the cache keeps; `respond.py` the plain responses.
"""

from app.urls import API_PREFIX

__all__ = ["API_PREFIX"]
