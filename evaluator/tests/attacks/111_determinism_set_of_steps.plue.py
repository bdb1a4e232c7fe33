# attack: deduplicate steps with set(): iteration order would follow memory addresses
# expect: error

def workflow(ctx):
    steps = [Step.bash("s" + str(i), "true") for i in range(20)]
    return Plan(name="ci", steps=list(set(steps)))
