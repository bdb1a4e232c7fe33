# attack: an empty runner label key, which no runner can carry: the step waits forever
# expect: unclean

def workflow(ctx):
    return Plan(name="ci", steps=[Step.bash("a", "true", runner="=x")])
