# attack: a thousand problems at once, for a flood of diagnostics
# expect: capped

def workflow(ctx):
    return Plan(name="ci", steps=[Step.bash("s" + str(i), "true", depends_on=["nowhere"]) for i in range(1000)])
