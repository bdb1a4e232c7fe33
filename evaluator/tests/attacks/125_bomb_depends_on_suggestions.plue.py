# attack: 10,000 unknown depends_on names, each a near miss of 500 long step ids, for "did you mean" over all of them
# expect: capped

def name(prefix, n):
    return prefix + "x" * 59 + ("000" + str(n))[-4:]

def workflow(ctx):
    return Plan(name="ci", steps=[
        Step.bash(name("s", i), "true", depends_on=[name("t", i * 20 + j) for j in range(20)])
        for i in range(500)
    ])
