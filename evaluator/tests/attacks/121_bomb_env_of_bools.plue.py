# attack: env values given as bools, which were not charged to the plan's byte budget
# expect: limit

def workflow(ctx):
    return Plan(name="ci", env={str(i): False for i in range(200000)}, steps=[Step.bash("a", "true")])
