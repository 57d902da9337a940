#!/usr/bin/env bash
# Pre-release only: regenerate the single initial migration from labelloop/store/models.py.
set -euo pipefail
cd "$(dirname "$0")/.."
f=labelloop/store/migrations/versions/0001_initial_label_store_schema.py
tmp=$(mktemp -d)
# keep the hand-written trigger function
python - "$f" "$tmp/triggers.py" <<'PY'
import sys
s = open(sys.argv[1]).read()
open(sys.argv[2], "w").write(s[s.index("\n\ndef _append_only_triggers"):])
PY
rm "$f"
cat > "$tmp/alembic.ini" <<INI
[alembic]
script_location = $(pwd)/labelloop/store/migrations
sqlalchemy.url = sqlite:///$tmp/autogen.db
INI
.venv/bin/alembic -c "$tmp/alembic.ini" revision --autogenerate -m "initial label store schema" --rev-id 0001 >/dev/null
python - "$f" "$tmp/triggers.py" <<'PY'
import sys
s = open(sys.argv[1]).read()
marker = "    # ### end Alembic commands ###\n"
i = s.index(marker)
s = s[:i] + marker + "    _append_only_triggers()\n" + s[i + len(marker):]
s += open(sys.argv[2]).read()
open(sys.argv[1], "w").write(s)
PY
.venv/bin/ruff format -q "$f"
.venv/bin/ruff check -q --fix "$f"
rm -rf "$tmp"
echo "regenerated $f"
