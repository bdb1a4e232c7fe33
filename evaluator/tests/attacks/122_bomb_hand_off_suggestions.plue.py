# attack: 1,400 bad needs_artifacts/workspace_from names, each a near miss of 1,000 long dependencies, for "did you mean" over all of them (10 s of engine CPU before the plan's suggestion budget)
# expect: capped

def name(prefix, n):
    return prefix + "x" * 59 + ("000" + str(n))[-4:]

def workflow(ctx):
    deps = [name("d", j) for j in range(1000)]
    wanted = [name("n", j) for j in range(100)]
    return Plan(name="ci", steps=[
        Step.bash("s" + str(i), "true", depends_on=deps, needs_artifacts=wanted, workspace_from=name("w", i))
        for i in range(14)
    ])
