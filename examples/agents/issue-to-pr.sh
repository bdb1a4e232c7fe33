#!/usr/bin/env bash
# Runs examples/agents/issue-to-pr.plue.py end to end on this machine, with no network:
# a fake GitHub (testkit's fake-forge: its REST API and a git remote over HTTP) hosting
# the example's files and issue #1, the scripted Claude (fake-claude), and `plue serve`.
# It comments `/plue fix` on the issue (a real GitHub `issue_comment` payload, signed like
# GitHub signs it), waits for the run, and prints the pull request and the issue's
# comments. Usage, from the repository's root:
#
#   bash examples/agents/issue-to-pr.sh
#
# Needs cargo, git, curl, openssl and python3. Everything it starts is stopped on exit.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
cargo build -q -p engine --bin plue -p testkit --bin fake-forge --bin fake-claude
bin="$root/target/debug"
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

repo="Codertocat/Hello-World"
forge_token="forge-token-$RANDOM$RANDOM"
secret="webhook-secret-$RANDOM"
admin="admin-token-$RANDOM"

# The repository's first commit: the example's files at the paths the workflow names.
for file in examples/agents/issue-to-pr.plue.py examples/agents/prompts/issue-*.md \
    examples/agents/demo/greet.sh examples/agents/demo/test.sh; do
    mkdir -p "$work/seed/$(dirname "$file")"
    cp "$file" "$work/seed/$file"
done

"$bin/fake-claude" --script examples/agents/scripts/issue-to-pr.json >"$work/claude.url" 2>"$work/claude.log" &
pids+=($!)
mkdir -p "$work/forge"
"$bin/fake-forge" --flavor github --token "$forge_token" --root "$work/forge" --repo "$repo=$work/seed" \
    --issue "$repo=greet.sh cannot shout" --user Codertocat=admin >"$work/forge.url" 2>"$work/forge.log" &
pids+=($!)
for f in claude forge; do
    until [ -s "$work/$f.url" ]; do sleep 0.1; done
done
claude="$(head -1 "$work/claude.url")"
forge="$(head -1 "$work/forge.url")"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
plue="http://127.0.0.1:$port"
ANTHROPIC_BASE_URL="$claude" PLUE_ADMIN_TOKEN="$admin" "$bin/plue" serve --listen "127.0.0.1:$port" \
    --data-dir "$work/data" --runners 2 --secret ANTHROPIC_API_KEY=sk-ant-fake \
    --secret-repos "ANTHROPIC_API_KEY=$repo" \
    --public-url "$plue" >"$work/plue.log" 2>&1 &
pids+=($!)
until curl -sf "$plue/healthz" >/dev/null; do sleep 0.2; done

api() { curl -sS -H "Authorization: Bearer $admin" -H 'content-type: application/json' "$@"; }
api -o /dev/null -X POST "$plue/api/repos" -d "{\"name\": \"$repo\", \"clone_url\": \"$forge/$repo.git\",
    \"forge\": \"github\", \"webhook_secret\": \"$secret\", \"api_url\": \"$forge/api/v3\",
    \"api_token\": \"$forge_token\"}"

# GitHub's own example of an issue_comment, saying `/plue fix` on issue #1.
python3 - "$root/engine/tests/fixtures/webhooks/github/issue_comment-created.json" "$work/comment.json" <<'PY'
import json, sys
payload = json.load(open(sys.argv[1]))
payload["comment"]["body"] = "/plue fix"
payload["repository"]["default_branch"] = "main"
json.dump(payload, open(sys.argv[2], "w"))
PY
signature="$(openssl dgst -sha256 -hmac "$secret" -r "$work/comment.json" | cut -d' ' -f1)"
answer="$(curl -sS -X POST "$plue/webhooks/github" -H 'content-type: application/json' \
    -H 'X-GitHub-Event: issue_comment' -H "X-GitHub-Delivery: $(date +%s%N)" \
    -H "X-Hub-Signature-256: sha256=$signature" --data-binary "@$work/comment.json")"
echo "delivery: $answer"
run="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["runs"][0])' "$answer")"
echo "run $run: $plue/runs/$run"

gh() { curl -sS -H "Authorization: Bearer $forge_token" "$forge/api/v3/repos/$repo/$1"; }
for _ in $(seq 1 600); do
    if gh "issues/1/comments" | grep -q "plue:run:$run:ended"; then break; fi
    sleep 0.5
done
echo
echo "== pull requests"
gh "pulls?state=all" | python3 -c 'import json,sys
for p in json.load(sys.stdin): print("#%d %s\n  %s (%s -> %s)\n%s\n" % (p["number"], p["title"], p["html_url"], p["head"]["ref"], p["base"]["ref"], p["body"]))'
echo "== the change"
git --git-dir "$work/forge/$repo.git" log -p -1 --format='%H %s' \
    "plue/comment-$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["comment"]["id"])' "$work/comment.json")-publish" 2>/dev/null || true
echo "== comments on issue #1"
gh "issues/1/comments" | python3 -c 'import json,sys
for c in json.load(sys.stdin): print("- %s: %s\n" % (c["user"]["login"], c["body"]))'
