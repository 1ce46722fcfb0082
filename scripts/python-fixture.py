#!/usr/bin/env python3
"""Writes the database that `byok import-python` is tested on, with the real
Python library (cjm-fasthtml-byok 0.0.3), and what the import must find in
it.

    python3 -m venv /tmp/venv
    /tmp/venv/bin/pip install cjm-fasthtml-byok==0.0.3
    /tmp/venv/bin/python scripts/python-fixture.py byok-sql/tests/data

writes python-0.0.3.sqlite3 (the library's own table, made and filled by
its BYOKManager) and python-0.0.3.expected.json (per row: the outcome the
import must report, and the key it must store). The keys are made up.
"""

import json
import os
import sqlite3
import sys
import time
from datetime import timedelta

# The library stores naive local times: pin the zone so that the file
# reads the same everywhere.
os.environ["TZ"] = "UTC"
time.tzset()

from cjm_fasthtml_byok.core.storage import BYOKManager  # noqa: E402
from cjm_fasthtml_byok.core.types import BYOKConfig, StorageBackend  # noqa: E402

SECRET = "byok-fixture-app-secret-0123456789-not-for-production"
OTHER_SECRET = "another-app-secret-that-byok-is-not-given-0123456789"
LONG = timedelta(days=365 * 60)


def manager(url, secret, default_ttl=LONG):
    config = BYOKConfig(storage_backend=StorageBackend.DATABASE, default_ttl=default_ttl)
    return BYOKManager(secret_key=secret, db_url=url, config=config)


def main(out_dir):
    db = os.path.join(out_dir, "python-0.0.3.sqlite3")
    if os.path.exists(db):
        os.remove(db)
    url = f"sqlite:///{db}"
    app = manager(url, SECRET)
    never = manager(url, SECRET, default_ttl=None)
    other = manager(url, OTHER_SECRET)
    expected = []

    def put(m, user, provider, key, outcome, ttl=None, reason=None):
        m.set_key(None, provider, key, user_id=user, ttl=ttl)
        expected.append({"user_id": user, "provider": provider, "outcome": outcome,
                         "key": key if outcome == "converted" else None, "reason": reason})

    put(app, "alice", "openai", "sk-proj-alice-openai-0001", "converted")
    put(app, "alice", "anthropic", "sk-ant-alice-anthropic-0002", "converted")
    put(app, "alice", "groq", "gsk_alice_groq_0003", "converted")
    put(app, "bob", "openai", "sk-proj-bob-openai-first-0004", "converted")
    put(app, "bob", "mistral", "mistral-bob-0005", "converted")
    put(app, "carol", "openai", "sk-proj-carol-expired-0006", "skipped",
        ttl=timedelta(days=-1), reason="expired")
    put(never, "dave", "openai", "sk-proj-dave-never-expires-0007", "converted")
    put(app, "zo\u00eb \U0001f30d", "google", "AIza-zoe-google-0008", "converted")
    put(other, "mallory", "openai", "sk-proj-mallory-other-secret-0009", "failed",
        reason="decrypt")
    put(app, "eve", "open\tai", "sk-proj-eve-tab-provider-0010", "failed", reason="provider")
    put(app, "frank", "openai", "", "failed", reason="empty")
    # The library updates a slot in place: bob's first openai key is gone.
    app.set_key(None, "openai", "sk-proj-bob-openai-second-0011", user_id="bob", ttl=LONG)
    expected[3]["key"] = "sk-proj-bob-openai-second-0011"

    rows = sqlite3.connect(db).execute(
        "SELECT id, user_id, provider, created_at, expires_at FROM user_api_keys ORDER BY id"
    ).fetchall()
    assert len(rows) == len(expected), rows
    for row, e in zip(rows, expected):
        assert (row[1], row[2]) == (e["user_id"], e["provider"]), (row, e)
        e.update(id=row[0], created_at=row[3], expires_at=row[4])
    with open(os.path.join(out_dir, "python-0.0.3.expected.json"), "w") as f:
        json.dump({"library": "cjm-fasthtml-byok 0.0.3", "secret": SECRET, "rows": expected},
                  f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
