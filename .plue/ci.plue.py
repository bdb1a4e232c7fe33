# Plue builds Plue: formatting, lints, the module-circle check and the tests of this
# repository, what `.ci/run` checks (less the book and the machine set-up), with step caches
# of cargo's downloads and build tree.
#
#     plue run .plue/ci.plue.py                                   # the whole workspace
#     plue run .plue/ci.plue.py --input crates="plue-types plue-vault"
#     plue run .plue/ci.plue.py --input caches=false              # the same steps, no caches
#
# What a step needs: `cargo` (with rustfmt and clippy) and `python3` on its PATH, readable by
# the step's own user. `plue run` as root runs each step as a user of its own, with its own
# HOME and /tmp: a toolchain under root's 0700 home or under /tmp is not reachable, one
# under /usr/local, /opt or any world-readable directory is (put its `bin` first on PATH;
# with rustup's proxies, set RUSTUP_HOME too: a step's HOME is not yours). A server's runner
# passes only PATH: give it the toolchain on its PATH (and `plue serve --pass-env RUSTUP_HOME`).
# Crates come from crates.io, so a step needs the network unless the caches hold them.
#
# The whole workspace's tests also need what `.ci/run` installs (PostgreSQL, Chromium, npm,
# mmdebstrap; a few need root), and a build tree of several GB: run `plue run
# --work-dir-on-disk` for it. A cache entry is at most 1 GiB (the archives' bound), so the
# whole workspace's `target` may not be saved; cargo's downloads are a cache of their own.
#
# Caches: each cargo step keeps `~/.cargo/registry` and `~/.cargo/git` (CARGO_HOME leads to
# the step's `~/.cargo`) in one cache and its `target` in another, keyed by Cargo.lock and
# rust-toolchain.toml (absent here: counted absent), named after the step and the packages
# it builds, so a narrowed run never restores or shadows the whole workspace's entries. The
# restore prefix (the cache's name) restores the last entry saved under another lock file:
# cargo then builds only what changed.

# The packages a manual run may name: cargo package names.
NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_-"
KEY = ["Cargo.lock", "rust-toolchain.toml"]

# Every cargo step: quiet colours, no incremental state (a clean build once, half the
# disk), line tables only for debug info (backtraces keep their lines; the trees and
# their cache archives shrink), the build tree in the step's workspace (never a
# CARGO_TARGET_DIR inherited from whoever ran `plue run`), downloads in the step's home.
# CARGO_HOME is a fixed path leading there: cargo's fingerprints hold the absolute path of
# each dependency's sources, and a home that moves with every attempt would rebuild them
# all ("the path to the source changed"). The link is in the step's own /tmp (a root
# runner gives each step one; elsewhere steps share /tmp, hence the step's id in it).
PRELUDE = """set -euo pipefail
mkdir -p "$HOME/.cargo" && ln -sfn "$HOME/.cargo" "/tmp/plue-ci-cargo-$PLUE_STEP_ID"
export CARGO_HOME="/tmp/plue-ci-cargo-$PLUE_STEP_ID" CARGO_TARGET_DIR="$PLUE_WORKSPACE/target"
export CARGO_INCREMENTAL=0 CARGO_TERM_COLOR=never CARGO_PROFILE_DEV_DEBUG=line-tables-only
cargo --version
"""

# A restored file carries the time of its restore, in no useful order, and cargo compares
# modification times: a dependency whose output looks newer than its dependent's rebuilds
# the dependent, and sources older than a restored build look built. So the build tree and
# cargo's downloads (immutable: a crate version's files never change) get one old time,
# and the checkout's files the present: the workspace's crates are rebuilt (never an
# older commit's build taken as up to date), the restored dependencies are not.
FRESHEN = """for tree in target "$HOME/.cargo/registry" "$HOME/.cargo/git"; do
  if [ -d "$tree" ]; then find "$tree" -exec touch -h -d @1000000000 {} +; fi
done
find . -path ./target -prune -o -type f -exec touch -c {} +
"""


def packages(text):
    """The package names of the `crates` input, each checked: they reach cargo as
    arguments (through the step's env, never spliced into its script)."""
    names = text.split()
    for name in names:
        if name[0] == "-" or len(name) > 64 or any(c not in NAME_CHARS for c in name.lower()):
            raise ValueError("crates: '" + name[:64] + "' is not a cargo package name")
    return sorted(set(names))


def tag(names):
    """`all` for the whole workspace, else 8 hex digits of the names' FNV-1a hash: a cache
    name stays short and the same for the same set of packages."""
    if not names:
        return "all"
    h = 2166136261
    for c in " ".join(names):
        h = ((h ^ ord(c)) * 16777619) % 4294967296
    return hex(h)[2:].rjust(8, "0")


def rust_caches(step, names, enabled):
    if not enabled:
        return []
    name = step + "-" + tag(names)
    return [
        Cache(name=name + "-cargo", paths=["~/.cargo/registry", "~/.cargo/git"], key=KEY,
              restore_prefixes=[name + "-cargo-"]),
        Cache(name=name + "-target", paths=["target"], key=KEY,
              restore_prefixes=[name + "-target-"]),
    ]


def workflow(ctx):
    names = packages(ctx.inputs.get("crates") or "")
    enabled = (ctx.inputs.get("caches") or "true") != "false"
    # `-p a -p b`, or the whole workspace; word-split by bash from the env, as data.
    selection = " ".join(["-p " + n for n in names]) if names else "--workspace"
    env = {"CI_PACKAGES": selection}
    return Plan(
        name="Plue CI",
        triggers=[
            Trigger.on_push(branch="main"),
            Trigger.on_pull_request(),
            Trigger.manual(inputs={
                "crates": {"default": "", "description":
                           "packages to lint and test, space-separated (empty: the whole workspace)"},
                "caches": {"default": True, "description":
                           "restore and save cargo's caches (off: the uncached baseline)"},
            }),
        ],
        env=env,
        steps=[
            Step.bash("fmt", PRELUDE + "cargo fmt --all -- --check", timeout=600, caches=[]),
            Step.bash("module-circles", "python3 .ci/module-circles.py", timeout=600, caches=[]),
            Step.bash("clippy", PRELUDE + FRESHEN + "cargo clippy $CI_PACKAGES --all-targets -- -D warnings",
                      timeout=10800, caches=rust_caches("clippy", names, enabled)),
            Step.bash("test", PRELUDE + FRESHEN + "cargo test $CI_PACKAGES", timeout=10800,
                      caches=rust_caches("test", names, enabled)),
        ],
    )
