# A CI pipeline: test, then build and review in parallel.
def workflow(ctx):
    return Plan(
        name="CI Pipeline",
        triggers=[
            Trigger.on_push(branch="main"),
            Trigger.on_pull_request(),
            Trigger.on_schedule("0 3 * * *"),
            Trigger.manual(inputs={"target": "staging"}),
        ],
        env={"CI": "true"},
        steps=[
            Step.bash("test", "cargo test --workspace", timeout=600, retries=2),
            Step.bash("build", "cargo build --release", depends_on=["test"]),
            Step.python("report", "print(open('Cargo.toml').read()[:200])", depends_on=["test"]),
            Step.llm("review", prompt="Review the code changes for bugs and risky edits.", depends_on=["test"]),
        ],
    )
