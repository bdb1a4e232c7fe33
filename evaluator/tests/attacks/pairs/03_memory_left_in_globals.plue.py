# attack: leave 200 MB alive at module level so the next evaluation runs out of memory
KEEP = ["x" * (10 ** 7) + str(i) for i in range(20)]

def workflow(ctx):
    return Plan(name="attacker", steps=[Step.bash("a", "true")])
