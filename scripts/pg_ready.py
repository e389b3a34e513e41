"""Exit 0 if the PostgreSQL server at the URL in argv[1] accepts a query, else 1."""

import sys

import psycopg

try:
    with psycopg.connect(sys.argv[1], connect_timeout=3) as conn:
        conn.execute("select 1")
except psycopg.Error as exc:
    print(f"PostgreSQL not ready: {exc}", file=sys.stderr)
    sys.exit(1)
