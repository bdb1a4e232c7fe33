def workflow(ctx):
    fns = [(lambda: 1), (lambda: 2), (lambda: 3), (lambda: 4)]
    ranks = sorted(range(4), key=lambda i: repr(fns[i]).split("0x")[-1])
    return Plan(name="ci", steps=[Step.bash("r" + str(i), "true") for i in ranks])
