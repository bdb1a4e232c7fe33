# attack: a runner label value with "," and "=" so two different label sets collide
# expect: unclean

def workflow(ctx):
    return Plan(name="ci", steps=[Step.bash("a", "true", runner={"zone": "eu,gpu=true"})])
