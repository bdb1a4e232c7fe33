def workflow(ctx):
    steps = [Step.bash("s" + str(i), "true") for i in range(8)]
    return Plan(name="ci", steps=list(set(steps)))
