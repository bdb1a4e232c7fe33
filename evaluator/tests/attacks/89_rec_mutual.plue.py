# attack: unbounded mutual recursion between two functions
# expect: recursion

def ping(n):
    return pong(n + 1)


def pong(n):
    return ping(n + 1)


def workflow(ctx):
    depth = ping(0)
    return Plan(
        name="rec-%d" % depth,
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("noop", "true")],
    )
