# attack: unbounded self recursion: def f(n): return f(n + 1)
# expect: recursion

def f(n):
    return f(n + 1)


def workflow(ctx):
    depth = f(0)
    return Plan(
        name="rec-%d" % depth,
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("noop", "true")],
    )
