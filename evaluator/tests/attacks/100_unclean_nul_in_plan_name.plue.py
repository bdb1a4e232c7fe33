# attack: a NUL byte in the plan name (PostgreSQL refuses NUL in TEXT)
# expect: unclean

def workflow(ctx):
    return Plan(name="ci" + chr(0), steps=[Step.bash("a", "true")])
