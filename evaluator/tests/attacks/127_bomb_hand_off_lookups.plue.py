# attack: 500 steps naming their 100 dependencies in needs_artifacts, for a search of every step per name (100 ms and 31 MiB of problems before hashed look-ups and the bounds)
# expect: limit

def workflow(ctx):
    steps = []
    for i in range(500):
        deps = ["s" + str(j) for j in range(max(0, i - 100), i)]
        steps.append(Step.bash("s" + str(i), "true", depends_on=deps, needs_artifacts=deps))
    return Plan(name="ci", steps=steps)
