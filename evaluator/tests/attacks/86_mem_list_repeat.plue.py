# attack: [0] * (10 ** 9) list allocation computed at runtime
# expect: memory

def workflow(ctx):
    n = 10
    cells = [0] * (n ** 9)
    return Plan(
        name="mem-%d" % len(cells),
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("noop", "true")],
    )
