"""Where the API lives, and the placeholder for its root URL in stored renderings.

A stored page must not carry the Host of whoever filled it, yet the contract's URLs are absolute
(like the Link headers). So a service writes the API's own URLs as ROOT_URL + path and the HTTP
layer (app/http/respond.py) fills in this request's root URL when it answers.
"""

API_PREFIX = "/api/v1"  # where the public API is mounted (app/api registers every blueprint under it)
# Placeholder for the API's root URL (scheme://host[/script root]). NUL never occurs in stored
# text (PostgreSQL refuses it), so it cannot collide with content.
ROOT_URL = "\x00"
POSTS_PATH = API_PREFIX + "/posts/"  # + id: a post's own URL under the API
JSON_ROOT_URL = b'"\\u0000'  # ROOT_URL at the start of a JSON string, as orjson writes it
