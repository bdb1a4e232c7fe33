# attack: 1,000 template references to unknown near misses of 1,000 long step ids, for "did you mean" over all of them
# expect: capped

def name(prefix, n):
    return prefix + "x" * 59 + ("000" + str(n))[-4:]

def workflow(ctx):
    return Plan(name="ci", steps=[
        Step.bash(name("s", i), "echo \"{{ steps." + name("t", i) + ".outputs.x }}\"")
        for i in range(1000)
    ])
