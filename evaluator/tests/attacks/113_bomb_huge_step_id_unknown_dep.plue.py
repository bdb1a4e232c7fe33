# attack: a 520,000-character step id and an unknown dependency: minutes of "did you mean" in the engine
# expect: limit

def workflow(ctx):
    return Plan(name="ci", steps=[Step.bash("x" * 520000, "true", depends_on=["y" * 500])])
