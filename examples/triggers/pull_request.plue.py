# Pull request trigger: lint only the files the pull request touches.
import shlex


def workflow(ctx):
    python_files = sorted(f for f in ctx.changed_files if f.endswith(".py"))
    number = ctx.pr.number if ctx.pr else 0
    return Plan(
        name="PR lint",
        triggers=[Trigger.on_pull_request(branches=["main"], actions=["opened", "synchronize", "reopened", "ready_for_review"])],
        steps=[
            Step.bash("lint", "echo linting " + (" ".join(shlex.quote(f) for f in python_files) or "nothing") + f" for PR {number}"),
        ],
    )
