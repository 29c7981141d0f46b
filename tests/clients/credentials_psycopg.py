"""psycopg 3 logins: prints one JSON object per attempt.

Usage: python3 credentials_psycopg.py CONNINFO...
Each conninfo is tried; the answer is current_user and whether the
connection is encrypted, or the SQLSTATE and message of the refusal.
"""
import json
import sys

import psycopg

for conninfo in sys.argv[1:]:
    try:
        with psycopg.connect(conninfo, connect_timeout=10) as conn:
            user = conn.execute("SELECT current_user").fetchone()[0]
            print(json.dumps({"ok": True, "user": user, "tls": conn.pgconn.ssl_in_use}))
    except psycopg.Error as e:
        print(json.dumps({"ok": False, "sqlstate": e.sqlstate, "message": str(e)}))
