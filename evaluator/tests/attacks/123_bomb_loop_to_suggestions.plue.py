# attack: 1,000 unknown loop_to names, each a near miss of 1,000 long step ids, for "did you mean" over all of them (7.5 s of engine CPU before the plan's suggestion budget)
# expect: capped

def name(prefix, n):
    return prefix + "x" * 59 + ("000" + str(n))[-4:]

def workflow(ctx):
    return Plan(name="ci", steps=[
        Step.bash(name("s", i), "true", loop_to=name("t", i), max_loops=1)
        for i in range(1000)
    ])
