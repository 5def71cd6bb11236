#!/usr/bin/env bash
# The README's first command as root from a clone inside a directory no other user can enter
# (mktemp -d is 0700): `npm install && npm start` serves the example on its embedded PostgreSQL,
# answers a token request, and a terminal's Ctrl-C (SIGINT to the whole process group) shuts it
# down with exit 0 and no warning. Prints "ok" or "not ok: <why>"; exits 0 or 1.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
closed=$(mktemp -d)
cleanup() {
  [ -n "${pgid:-}" ] && kill -INT -- "-$pgid" 2>/dev/null
  # the cluster kept outside the closed directory (the notice names it) goes with the clone
  kept=$(grep -o '/var/tmp/fastify-task-events/data-[0-9a-f]*' "$closed/start.log" 2>/dev/null | head -n 1)
  sleep 1
  [ -n "$kept" ] && rm -rf "$kept"
  rm -rf "$closed"
}
trap cleanup EXIT
fail() { echo "not ok: $*"; tail -n 30 "$closed/start.log" 2>/dev/null; exit 1; }

[ "$(stat -c %a "$closed")" = 700 ] || fail "mktemp -d is not 0700"
git clone -q "$repo" "$closed/clone" || fail "git clone"
cd "$closed/clone" || fail "cd"
npm install --no-audit --no-fund >"$closed/install.log" 2>&1 || { tail -n 30 "$closed/install.log"; fail "npm install"; }

PORT=3917 EMBEDDED_PG_PORT=5497 setsid npm start >"$closed/start.log" 2>&1 &
pgid=$!
for _ in $(seq 1 120); do
  grep -q 'task events example on' "$closed/start.log" && break
  kill -0 "$pgid" 2>/dev/null || fail "npm start exited before serving"
  sleep 0.5
done
grep -q 'task events example on' "$closed/start.log" || fail "npm start did not serve within 60 s"
token=$(curl -sf -H 'Authorization: Token demo-key-1' http://127.0.0.1:3917/api/users/ws-auth/) || fail "GET /api/users/ws-auth/"
[[ "$token" =~ \"uuid\":\"[0-9a-f-]{36}\" ]] || fail "no uuid in $token"

kill -INT -- "-$pgid"
wait "$pgid"
code=$?
pgid=
[ "$code" -eq 0 ] || fail "exit code $code after Ctrl-C"
if grep -E '"level":(4|5|6)0' "$closed/start.log"; then fail "a warning or error was logged"; fi
sleep 1; ss -ltn | grep -q ":5497 " && fail "the embedded PostgreSQL (port 5497) is still running"
echo ok
