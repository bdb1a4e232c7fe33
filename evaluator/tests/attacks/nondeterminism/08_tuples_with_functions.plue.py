def workflow(ctx):
    pairs = [(i, (lambda: 0)) for i in range(16)]
    return Plan(name="ci", steps=[Step.bash("p" + str(p[0]), "true") for p in set(pairs)])
