# Push trigger: release branches and version tags, only when sources change.
def workflow(ctx):
    return Plan(
        name="Release build",
        triggers=[
            Trigger.on_push(branches=["main", "release/*"], tags=["v*"], paths=["src/**", "Cargo.toml"], paths_ignore=["docs/**"]),
        ],
        steps=[Step.bash("build", f"echo building {ctx.sha[:8]} of {ctx.ref}")],
    )
