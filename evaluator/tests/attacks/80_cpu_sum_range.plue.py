# attack: sum(range(10**12)) with the bound computed at runtime
# expect: timeout

def workflow(ctx):
    n = 10
    total = sum(range(n ** 12))
    return Plan(
        name="sum-%d" % total,
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("noop", "true")],
    )
