"""The OpenAPI document as the app serves it, for the linters (`make lint-openapi`).

python scripts/openapi.py dump build/openapi.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def dump(target: Path) -> None:
    from app import create_app

    # The document depends on the routes and schemas only: an in-memory database, a throwaway secret.
    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://", "SECRET_KEY": "openapi-dump", "TESTING": True})
    with app.test_client() as client:
        response = client.get("/api/v1/openapi.json")
    if response.status_code != 200:
        raise SystemExit(f"GET /api/v1/openapi.json answered {response.status_code}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(response.data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dump", help="write the document to a file").add_argument("target", type=Path)
    args = parser.parse_args()
    dump(args.target)


if __name__ == "__main__":
    main()
